"""Create or patch the KServe InferenceService that serves a published model (idempotent).

The predictor is our own container (the project image running `python -m serving`). KServe's storage
initializer downloads the model dir named by the container's STORAGE_URI env var into /mnt/models before the
predictor starts. The database DSN reaches the pod from a Secret reference, never as a value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from recsys.contract import DB_CLIENT_LABEL, DB_CLIENT_LABEL_VALUE, MODEL_STATUS_PATH

KSERVE_GROUP = "serving.kserve.io"
KSERVE_VERSION = "v1beta1"
KSERVE_PLURAL = "inferenceservices"
PREDICTOR_CONTAINER = "kserve-container"  # KServe reads STORAGE_URI only from the container of this name
MODEL_MOUNT_PATH = "/mnt/models"
HTTP_PORT = 8080
MANAGED_BY = {"app.kubernetes.io/managed-by": "recsys-deploy", "app.kubernetes.io/part-of": "recsys"}
NON_ROOT_UID = 10001  # the project image's user (Containerfile)

# The Feast registry is a file local to each pod: write the repo's definitions into it (`recsys feast register`:
# no database statement; the feast-apply Job made the tables) before the predictor reads features. Then exec, so
# the predictor gets the container's signals. It listens on every interface of the pod (`--host 0.0.0.0`).
# PREDICTOR_WORKERS processes serve the one port: a Python worker saturates at about one core (the GIL; issue 13
# measured 1.02 cores at 16 clients), so one per core of the CPU limit (Resources.cpu_limit). Each loads the
# model: parent + 2 workers measured 1.2 GB unique (USS), 2.1 GB RSS summed (bench serve), hence 3Gi below.
PREDICTOR_WORKERS = 2
PREDICTOR_START = (
    f"recsys feast register && exec python -m serving --model-dir {MODEL_MOUNT_PATH} --http_port {HTTP_PORT}"
    f" --host 0.0.0.0 --workers {PREDICTOR_WORKERS}"
)
# the root filesystem is read-only: Feast's registry file and every cache (RECSYS_HOME, Hugging Face) go to emptyDirs
WRITABLE_DIRS = {"tmp": "/tmp", "feast-registry": "/app/feature_repo/data"}
PREDICTOR_DB_SECRET = "recsys-postgres-predictor"  # the predictor's own role: reads, and writes only events
# Autoscaling by KServe's HPA (RawDeployment scales on cpu or memory; concurrency and rps need Knative's KPA).
# bench serve: 2 workers answered 792 req/s at 16 clients on 1.48 cores, i.e. 1.87 ms of CPU per request, with
# p99 41 ms on the shared 2-core box (64 clients: 597 req/s, p99 481 ms). Target 60% of the 2 requested cores =
# 1.2 cores ~ 640 req/s per replica: a replica is added before it reaches the 16-client point.
SCALE_METRIC = "cpu"
SCALE_TARGET_PERCENT = 60
MIN_REPLICAS = 2  # a replica restarting or rolling out leaves one serving
# each serving process may hold 4 (ServingSettings.pool_size) + 10 (Feast's pool) Postgres connections: 8 replicas
# x 2 processes x 14 = 224, under the max_connections=300 that manifests/base/postgres.yaml sets
MAX_REPLICAS = 8

Action = Literal["dry-run", "created", "patched", "unchanged"]


@dataclass(frozen=True)
class Resources:
    """Requests and limits of the predictor container."""

    cpu_request: str = "2"  # = cpu_limit: the HPA's percentage is of the request, and a serving pod gets its cores
    memory_request: str = "2Gi"
    cpu_limit: str = "2"  # = PREDICTOR_WORKERS cores
    memory_limit: str = "3Gi"  # PREDICTOR_WORKERS workers loading the model + the parent (see PREDICTOR_WORKERS)


@dataclass(frozen=True)
class DeployResult:
    action: Action
    manifest: dict[str, Any] = field(repr=False)


class CustomObjects(Protocol):
    """The slice of kubernetes.client.CustomObjectsApi this module uses (a fake stands in for it in tests)."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]: ...

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]: ...

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]: ...


def storage_uri(model_uri: str) -> str:
    """KFP's artifact store answers to s3:// for the storage initializer, though KFP writes minio:// URIs."""
    if not model_uri:
        raise ValueError("model_uri is empty: pass the published model's storage URI (s3://, gs://, pvc://...)")
    if model_uri.startswith("minio://"):
        return "s3://" + model_uri.removeprefix("minio://")
    return model_uri


def inference_service_manifest(
    name: str,
    namespace: str,
    image: str,
    model_uri: str,
    *,
    db_secret_name: str = PREDICTOR_DB_SECRET,
    db_secret_key: str = "dsn",
    service_account: str | None = "recsys-predictor",
    resources: Resources = Resources(),
    min_replicas: int = MIN_REPLICAS,
    max_replicas: int = MAX_REPLICAS,
    model_version: str | None = None,
) -> dict[str, Any]:
    """The InferenceService as a plain dict (the same for the same arguments, so it can be diffed)."""
    for label, value in (("name", name), ("namespace", namespace), ("image", image)):
        if not value:
            raise ValueError(f"{label} must not be empty")
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {min_replicas} and {max_replicas}")
    annotations = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    if model_version:
        annotations["recsys.io/model-version"] = model_version
    container = {
        "name": PREDICTOR_CONTAINER,
        "image": image,
        "command": ["sh", "-c", PREDICTOR_START],
        "env": [
            {"name": "STORAGE_URI", "value": storage_uri(model_uri)},
            {"name": "RECSYS_PG_DSN", "valueFrom": {"secretKeyRef": {"name": db_secret_name, "key": db_secret_key}}},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "HF_HOME", "value": "/tmp/huggingface"},
        ],
        "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
        # our route: 503 until the live version's vectors and catalogue are loaded (tests/test_serving_readiness.py);
        # KServe's server-wide /v2/health/ready says ready before that
        "readinessProbe": {
            "httpGet": {"path": MODEL_STATUS_PATH, "port": HTTP_PORT},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
            "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": name, "mountPath": path} for name, path in WRITABLE_DIRS.items()],
    }
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "scaleMetric": SCALE_METRIC,
        "scaleTarget": SCALE_TARGET_PERCENT,
        "labels": {DB_CLIENT_LABEL: DB_CLIENT_LABEL_VALUE},
        "automountServiceAccountToken": False,  # the predictor calls no Kubernetes API
        "containers": [container],
        "volumes": [{"name": name, "emptyDir": {"sizeLimit": "256Mi"}} for name in WRITABLE_DIRS],
    }
    if service_account:
        predictor["serviceAccountName"] = service_account
    return {
        "apiVersion": f"{KSERVE_GROUP}/{KSERVE_VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY), "annotations": annotations},
        "spec": {"predictor": predictor},
    }


def _contains(actual: Any, desired: Any) -> bool:
    """True when every field of `desired` is in `actual` (the API server adds defaults we must not fight)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and _contains(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(_contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return actual == desired


def custom_objects_api() -> CustomObjects:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def deploy_inference_service(
    name: str,
    namespace: str,
    image: str,
    model_uri: str,
    *,
    dry_run: bool = False,
    api: CustomObjects | None = None,
    **manifest_options: Any,
) -> DeployResult:
    """Create the InferenceService, or patch it when it differs; a second identical call changes nothing.

    dry_run=True touches no cluster and returns the manifest. `manifest_options` go to
    `inference_service_manifest` (secret name/key, service account, resources, replicas, model_version).
    """
    manifest = inference_service_manifest(name, namespace, image, model_uri, **manifest_options)
    if dry_run:
        return DeployResult("dry-run", manifest)
    from kubernetes.client.exceptions import ApiException

    api = api or custom_objects_api()
    where = {"group": KSERVE_GROUP, "version": KSERVE_VERSION, "namespace": namespace, "plural": KSERVE_PLURAL}
    try:
        existing = api.get_namespaced_custom_object(name=name, **where)
    except ApiException as exc:
        if exc.status != 404:
            raise
        api.create_namespaced_custom_object(body=copy.deepcopy(manifest), **where)
        return DeployResult("created", manifest)
    desired = {"metadata": {k: manifest["metadata"][k] for k in ("labels", "annotations")}, "spec": manifest["spec"]}
    if _contains(existing, desired):
        return DeployResult("unchanged", manifest)
    api.patch_namespaced_custom_object(name=name, body=copy.deepcopy(desired), **where)
    return DeployResult("patched", manifest)
