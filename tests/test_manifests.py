"""Kubernetes manifests, the project image and the deploy step, checked without a cluster.

No cluster runs here: built-in kinds are validated against the Kubernetes JSON schemas (kubernetes-validate,
strict: unknown fields fail), the InferenceService CRD round-trips through the kserve SDK's models, and the deploy
step's create/patch logic runs against a fake CustomObjectsApi (the one stand-in, because no API server exists).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes.client.models as k8s_models
import kubernetes_validate
import pytest
import yaml
from kserve import ApiClient
from kubernetes.client.exceptions import ApiException

from recsys import deploy

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
K8S_VERSION = "1.32"  # a current Kubernetes; kind 0.26+ node images run 1.32
NOT_KUBERNETES = {"Kustomization", "Cluster", "InferenceService", "TrainingRuntime"}  # checked by other tests
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(MANIFESTS.rglob("*.yaml")) for doc in documents(path)]


def from_kserve_json(data: Any, type_name: str) -> Any:
    """Deserialise like the kserve SDK's ApiClient, but fail on unknown fields and wrong primitive types.

    kserve's own deserialiser cannot build the Kubernetes types it refers to (V1ObjectMeta, V1Container...),
    so those come from kubernetes.client.models.
    """
    if data is None:
        return None
    if type_name.startswith("list["):
        assert isinstance(data, list), (type_name, data)
        return [from_kserve_json(item, type_name[5:-1]) for item in data]
    if match := re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name):
        assert isinstance(data, dict), (type_name, data)
        return {key: from_kserve_json(value, match.group(2)) for key, value in data.items()}
    if type_name in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[type_name]), (type_name, data)
        return data
    import kserve.models

    cls = getattr(kserve.models, type_name, None) or getattr(k8s_models, type_name)
    unknown = set(data) - set(cls.attribute_map.values())
    assert not unknown, f"{type_name} has no field(s) {sorted(unknown)}"
    kwargs = {
        attr: from_kserve_json(data[key], cls.openapi_types[attr])
        for attr, key in cls.attribute_map.items()
        if key in data
    }
    return cls(**kwargs)


def round_trip_inference_service(manifest: dict[str, Any]) -> dict[str, Any]:
    return ApiClient().sanitize_for_serialization(from_kserve_json(manifest, "V1beta1InferenceService"))


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in ("StatefulSet", "Job", "Deployment"):
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "InferenceService":
        return [doc["spec"]["predictor"]]
    return []


# ------------------------------------------------------------------------------------------------ manifests
@pytest.mark.unit
def test_every_builtin_manifest_validates_against_the_kubernetes_schema() -> None:
    checked = 0
    for _, doc in all_documents():
        if doc.get("kind") in NOT_KUBERNETES:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    kinds = {doc["kind"] for _, doc in all_documents()}
    assert {
        "Namespace",
        "StatefulSet",
        "Service",
        "Secret",
        "Job",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "InferenceService",
    } <= kinds
    assert checked >= 10


@pytest.mark.unit
def test_strict_validation_rejects_an_unknown_field() -> None:
    statefulset = next(doc for _, doc in all_documents() if doc["kind"] == "StatefulSet")
    broken = copy.deepcopy(statefulset)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.unit
def test_inference_service_round_trips_through_the_kserve_models() -> None:
    [isvc] = [doc for _, doc in all_documents() if doc["kind"] == "InferenceService"]
    assert round_trip_inference_service(isvc) == isvc
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(AssertionError, match="pathh"):
        round_trip_inference_service(broken)


@pytest.mark.unit
def test_inference_service_manifest_is_what_the_deploy_step_writes() -> None:
    [isvc] = documents(MANIFESTS / "base" / "inferenceservice.yaml")
    container = isvc["spec"]["predictor"]["containers"][0]
    uri = next(env["value"] for env in container["env"] if env["name"] == "STORAGE_URI")
    assert isvc == deploy.inference_service_manifest("recommender", "recsys", container["image"], uri)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/recommender"
    assert container["resources"]["requests"] and container["resources"]["limits"]


@pytest.mark.unit
def test_predictor_autoscales_on_cpu_of_its_full_request() -> None:
    """HPA (RawDeployment) between 2 and 8 replicas at 60% CPU; the percentage is of the request, so the request is
    the whole limit; the local overlay keeps one replica; Postgres admits every replica's pools."""
    [isvc] = documents(MANIFESTS / "base" / "inferenceservice.yaml")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 8)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 60)
    resources = predictor["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "2"
    [postgres] = [d for d in documents(MANIFESTS / "base" / "postgres.yaml") if d["kind"] == "StatefulSet"]
    args = postgres["spec"]["template"]["spec"]["containers"][0]["args"]
    connections_per_replica = 2 * (4 + 10)  # processes x (ServingSettings.pool_size + Feast's max_conn)
    assert int(args[args.index("-c") + 1].removeprefix("max_connections=")) >= 8 * connections_per_replica
    local = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / "local")], capture_output=True, text=True, check=True
    ).stdout
    [local_isvc] = [d for d in yaml.safe_load_all(local) if d and d["kind"] == "InferenceService"]
    assert (local_isvc["spec"]["predictor"]["minReplicas"], local_isvc["spec"]["predictor"]["maxReplicas"]) == (1, 1)


@pytest.mark.unit
def test_every_pod_runs_non_root_without_privilege_escalation_or_capabilities() -> None:
    pods = [spec for _, doc in all_documents() for spec in pod_specs(doc)]
    assert len(pods) == 4  # postgres, feast-apply job, predictor, storefront
    for spec in pods:
        pod_non_root = spec.get("securityContext", {}).get("runAsNonRoot", False)
        for container in spec["containers"]:
            security = container["securityContext"]
            assert pod_non_root or security.get("runAsNonRoot") is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["capabilities"]["drop"] == ["ALL"], container["name"]
            assert container["resources"]["limits"], container["name"]


@pytest.mark.unit
def test_postgres_uses_pgvector_with_a_volume_and_a_secret_password() -> None:
    statefulset = next(doc for _, doc in all_documents() if doc["kind"] == "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "pgvector/pgvector:pg17"
    password = next(env for env in container["env"] if env["name"] == "POSTGRES_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["name"] == "recsys-postgres"
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]


@pytest.mark.unit
def test_secret_templates_hold_no_values_and_stay_out_of_kustomize() -> None:
    secrets = [(path, doc) for path, doc in all_documents() if doc["kind"] == "Secret"]
    assert {doc["metadata"]["name"] for _, doc in secrets} == {
        "recsys-postgres",
        "recsys-postgres-predictor",
        "recsys-model-storage",
    }
    for _, doc in secrets:
        assert "data" not in doc
        assert all(value == "" for value in doc["stringData"].values()), doc["metadata"]["name"]
    listed = documents(MANIFESTS / "base" / "kustomization.yaml")[0]["resources"]
    assert not {path.name for path, _ in secrets} & set(listed)


@pytest.mark.unit
def test_only_labelled_clients_reach_postgres() -> None:
    [policy] = [doc for _, doc in all_documents() if doc.get("metadata", {}).get("name") == "recsys-postgres-clients"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "recsys-postgres"}
    sources = policy["spec"]["ingress"][0]["from"]
    assert all(source["podSelector"]["matchLabels"] == {deploy.DB_CLIENT_LABEL: "true"} for source in sources)
    job = next(doc for _, doc in all_documents() if doc["kind"] == "Job")
    assert job["spec"]["template"]["metadata"]["labels"][deploy.DB_CLIENT_LABEL] == "true"
    isvc = deploy.inference_service_manifest("r", "ns", "img", "s3://b/m")
    assert isvc["spec"]["predictor"]["labels"][deploy.DB_CLIENT_LABEL] == "true"


@pytest.mark.unit
def test_predictor_is_hardened_and_only_registers_feast_definitions() -> None:
    """Read-only root filesystem with emptyDirs, no service-account token, its own database role, no `feast apply`
    (the Job runs it), listening on the pod's interfaces, and a NetworkPolicy around it."""
    isvc = deploy.inference_service_manifest("recommender", "recsys", "img", "s3://b/m")
    predictor = isvc["spec"]["predictor"]
    [container] = predictor["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert predictor["automountServiceAccountToken"] is False
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "feast-registry": "/app/feature_repo/data"}
    assert {v["name"] for v in predictor["volumes"] if "emptyDir" in v} == set(mounts)
    dsn = next(env for env in container["env"] if env["name"] == "RECSYS_PG_DSN")
    assert dsn["valueFrom"]["secretKeyRef"]["name"] == "recsys-postgres-predictor"
    start = container["command"][-1]
    assert "feast apply" not in start and "recsys feast register" in start and "--host 0.0.0.0" in start
    # one worker process per core of the CPU limit (a Python worker saturates at one core)
    assert "--workers 2" in start and container["resources"]["limits"]["cpu"] == "2"
    job = next(doc for _, doc in all_documents() if doc["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["recsys", "feast", "apply"]
    account = next(doc for _, doc in all_documents() if doc["kind"] == "ServiceAccount"
                   and doc["metadata"]["name"] == "recsys-predictor")  # fmt: skip
    assert account["automountServiceAccountToken"] is False
    [policy] = [doc for _, doc in all_documents() if doc.get("metadata", {}).get("name") == "recsys-predictor"
                and doc["kind"] == "NetworkPolicy"]  # fmt: skip
    assert policy["spec"]["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "recommender"}
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]] == [deploy.HTTP_PORT]


@pytest.mark.unit
def test_storefront_is_read_only_and_reaches_only_the_predictor() -> None:
    storefront = {doc["kind"]: doc for doc in documents(MANIFESTS / "base" / "storefront.yaml")}
    assert set(storefront) == {"Deployment", "Service", "NetworkPolicy"}
    pod = storefront["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    [container] = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert deploy.DB_CLIENT_LABEL not in labels and "env" not in container  # no database, no Secret
    assert storefront["Service"]["spec"]["selector"] == labels
    assert storefront["Service"]["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]

    [isvc] = documents(MANIFESTS / "base" / "inferenceservice.yaml")
    predictor_port = isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"]
    command = container["command"]
    assert command[:2] == ["recsys", "ui"]
    url = command[command.index("--predictor-url") + 1]
    assert url.startswith(f"http://{isvc['metadata']['name']}-predictor.{isvc['metadata']['namespace']}.svc")
    from typer.testing import CliRunner

    from recsys.cli import app

    usage = CliRunner().invoke(app, ["ui", "--help"], env={"COLUMNS": "200"}).output
    assert all(f" {flag} " in usage for flag in command if flag.startswith("--")), usage  # the CLI takes them all

    policy = storefront["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == labels
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    to_predictor, to_dns = policy["egress"]
    assert to_predictor["to"] == [
        {"podSelector": {"matchLabels": {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}}}
    ]
    assert to_predictor["ports"] == [{"protocol": "TCP", "port": predictor_port}]
    assert to_dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {p["port"] for p in to_dns["ports"]} == {53}


@pytest.mark.unit
def test_deploy_role_may_only_manage_inference_services() -> None:
    role = next(doc for _, doc in all_documents() if doc["kind"] == "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "list", "watch", "create", "patch"],
        }
    ]


@pytest.mark.unit
def test_kustomization_resources_exist() -> None:
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        for resource in documents(kustomization)[0]["resources"]:
            assert (kustomization.parent / resource).exists(), (kustomization, resource)


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for `kubectl kustomize`) is not installed")
def test_local_overlay_builds_and_its_output_validates() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / "local")], check=True, capture_output=True, text=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    for doc in docs:
        if doc["kind"] == "InferenceService":
            assert round_trip_inference_service(doc) == doc
            container = doc["spec"]["predictor"]["containers"][0]
            assert container["image"] == "recsys:dev" and container["env"]  # the patch kept the rest
            assert container["resources"]["limits"]["memory"] == "1536Mi"
        elif doc["kind"] not in NOT_KUBERNETES:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"].get("namespace", "recsys") == "recsys" or doc["kind"] == "Namespace"
    statefulset = next(doc for doc in docs if doc["kind"] == "StatefulSet")
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"


@pytest.mark.unit
def test_kind_config_and_quick_start_script() -> None:
    [cluster] = documents(MANIFESTS / "kind" / "kind-config.yaml")
    assert (cluster["kind"], cluster["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    script = ROOT / "scripts" / "kind-up.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for path in ("manifests/kind/kind-config.yaml", "Containerfile", "manifests/overlays/local"):
        assert path in text and (ROOT / path).exists(), path


@pytest.mark.unit
def test_containerfile_runs_as_the_uid_the_manifests_expect() -> None:
    text = (ROOT / "Containerfile").read_text()
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users == [str(deploy.NON_ROOT_UID)]
    for folder in ("src/", "components/", "pipelines/", "serving/", "feature_repo/"):
        assert f"COPY {folder} {folder}" in text


# ------------------------------------------------------------------------------------------------ deploy step
class FakeCustomObjects:
    """Stands in for kubernetes.client.CustomObjectsApi (no API server here); the server adds a default field."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        self.calls.append("get")
        if (namespace, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[namespace, name])

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append("create")
        stored = copy.deepcopy(body)
        stored["spec"]["predictor"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"  # a server default
        stored["status"] = {"url": "http://recommender.recsys"}
        self.objects[namespace, body["metadata"]["name"]] = stored
        return stored

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append("patch")
        stored = self.objects[namespace, name]
        stored["spec"] = copy.deepcopy(body["spec"])  # JSON merge patch replaces lists
        stored["metadata"].update(copy.deepcopy(body["metadata"]))
        return stored


@pytest.mark.unit
def test_deploy_dry_run_twice_gives_identical_manifests() -> None:
    first = deploy.deploy_inference_service("recommender", "recsys", "recsys:dev", "s3://b/m", dry_run=True)
    second = deploy.deploy_inference_service("recommender", "recsys", "recsys:dev", "s3://b/m", dry_run=True)
    assert first.action == second.action == "dry-run"
    assert yaml.safe_dump(first.manifest) == yaml.safe_dump(second.manifest)
    assert round_trip_inference_service(first.manifest) == first.manifest


@pytest.mark.unit
def test_deploy_creates_then_changes_nothing_then_patches_a_new_model() -> None:
    api = FakeCustomObjects()
    args = ("recommender", "recsys", "recsys:dev")
    assert deploy.deploy_inference_service(*args, "s3://b/m1", api=api).action == "created"
    assert deploy.deploy_inference_service(*args, "s3://b/m1", api=api).action == "unchanged"
    assert api.calls == ["get", "create", "get"]
    assert deploy.deploy_inference_service(*args, "s3://b/m2", api=api, model_version="v2").action == "patched"
    stored = api.objects["recsys", "recommender"]
    env = stored["spec"]["predictor"]["containers"][0]["env"]
    assert {"name": "STORAGE_URI", "value": "s3://b/m2"} in env
    assert stored["metadata"]["annotations"]["recsys.io/model-version"] == "v2"
    assert deploy.deploy_inference_service(*args, "s3://b/m2", api=api, model_version="v2").action == "unchanged"


@pytest.mark.unit
def test_deploy_passes_on_api_errors_other_than_not_found() -> None:
    class Forbidden(FakeCustomObjects):
        def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise ApiException(status=403, reason="Forbidden")

    api = Forbidden()
    with pytest.raises(ApiException):
        deploy.deploy_inference_service("recommender", "recsys", "img", "s3://b/m", api=api)
    assert "create" not in api.calls


@pytest.mark.unit
def test_manifest_inputs_are_checked() -> None:
    assert deploy.storage_uri("minio://mlpipeline/v2/artifacts/x/model") == "s3://mlpipeline/v2/artifacts/x/model"
    assert deploy.storage_uri("gs://bucket/model") == "gs://bucket/model"
    with pytest.raises(ValueError, match="model_uri"):
        deploy.inference_service_manifest("r", "ns", "img", "")
    with pytest.raises(ValueError, match="image"):
        deploy.inference_service_manifest("r", "ns", "", "s3://b/m")
    with pytest.raises(ValueError, match="replicas"):
        deploy.inference_service_manifest("r", "ns", "img", "s3://b/m", min_replicas=3, max_replicas=2)
    manifest = deploy.inference_service_manifest("r", "ns", "img", "s3://b/m")
    assert "password" not in yaml.safe_dump(manifest).lower()
