"""Distributed training on Kubeflow (issue 16): the TrainJob the pipeline compiles in, its runtime and RBAC, and the
train step's launch/wait logic.

No cluster runs here: the TrainJob and TrainingRuntime are validated against Kubeflow Trainer's own API models
(kubeflow-trainer-api, generated from the CRDs' OpenAPI: a wrong type fails, an unknown field is dropped and the
round trip differs), the runtime's pod template against the Kubernetes schema (kubernetes-validate, strict), and the
launch/wait logic runs against a fake CustomObjectsApi (the one stand-in: no API server exists here).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubeflow_trainer_api.models import TrainerV1alpha1TrainingRuntime, TrainerV1alpha1TrainJob
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from components.settings import BASE_IMAGE
from recsys import training_job
from recsys.cli import app
from recsys.training_job import DistributedTraining, TrainJobError

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
TRAINING_YAML = ROOT / "manifests" / "base" / "training.yaml"
K8S_VERSION = "1.32"


def round_trip(model: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    return model.from_dict(copy.deepcopy(manifest)).to_dict()


def compile_with(tmp_path: Path, *options: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    out = tmp_path / f"pipeline{'-'.join(options)}.yaml"
    result = CliRunner().invoke(app, ["pipeline", "compile", "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    spec, platform = yaml.safe_load_all(text)
    return text, spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def training_manifests() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(TRAINING_YAML.read_text()) if doc}


# ------------------------------------------------------------------------------------------------ compiled pipeline
def test_two_workers_compile_a_valid_train_job_into_the_pipeline(tmp_path: Path) -> None:
    _, spec, platform = compile_with(tmp_path, "--train-workers", "2")
    executors = spec["deploymentSpec"]["executors"]
    assert "exec-train" not in executors and "exec-train-distributed" in executors
    train_tasks = [
        (name, component["dag"]["tasks"])
        for name, component in spec["components"].items()
        if "train-distributed" in component.get("dag", {}).get("tasks", {})
    ]
    assert len(train_tasks) == 2  # both branches of the images switch
    for _, tasks in train_tasks:
        task = tasks["train-distributed"]
        template = json.loads(task["inputs"]["parameters"]["job_template"]["runtimeValue"]["constant"])
        assert task["inputs"]["parameters"]["namespace"] == {"componentInputParameter": "namespace"}
        assert round_trip(TrainerV1alpha1TrainJob, template) == template
        trainer = template["spec"]["trainer"]
        assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 1)
        assert trainer["image"] == BASE_IMAGE
        assert trainer["command"] == ["torchrun", "--no-python", "recsys", "train", "--no-events", "--device", "cpu"]
        assert trainer["resourcesPerNode"]["limits"] == {"cpu": "4", "memory": "8Gi"}
        assert template["spec"]["runtimeRef"] == {
            "apiGroup": "trainer.kubeflow.org",
            "kind": "TrainingRuntime",
            "name": training_manifests()["TrainingRuntime"]["metadata"]["name"],
        }
        # the evaluation reads the TrainJob's model: the same Model artifact as in-pod training
        model_input = tasks["evaluate"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
        assert model_input == {"outputArtifactKey": "model", "producerTask": "train-distributed"}

        filled = training_job.train_job_manifest(
            template, "recsys-train-x", "recsys", "/mnt/training/x", "random", 5, 3
        )
        assert round_trip(TrainerV1alpha1TrainJob, filled) == filled
        args = filled["spec"]["trainer"]["args"]
        assert args[args.index("--data") + 1] == "/mnt/training/x/data" and args[args.index("--epochs") + 1] == "5"
    for executor in ("exec-train-distributed", "exec-train-distributed-2"):
        [mount] = platform[executor]["pvcMount"]
        assert (mount["constant"], mount["mountPath"]) == (training_job.TRAINING_CLAIM, training_job.TRAINING_MOUNT)


def test_one_worker_compiles_exactly_the_default_pipeline(tmp_path: Path) -> None:
    default_text, spec, _ = compile_with(tmp_path)
    one_worker_text, _, _ = compile_with(tmp_path, "--train-workers", "1")
    assert one_worker_text == default_text
    assert "TrainJob" not in default_text and "train-distributed" not in default_text
    assert spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["cpuLimit"] == 4


def test_gpu_workers_run_one_process_per_gpu_over_nccl() -> None:
    template = training_job.train_job_template(DistributedTraining(3, "img:1", gpus_per_worker=4))
    trainer = template["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 4)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    assert trainer["command"][-2:] == ["--device", "cuda"]  # cuda -> nccl (recsys.model.distributed)
    assert round_trip(TrainerV1alpha1TrainJob, template) == template
    assert training_job.distributed_training(1, 1, 0, "img") is None  # the default: in the step's pod
    assert training_job.distributed_training(1, 2, 0, "img") is not None  # one pod, two processes


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--train-workers", "0"], ">= 1"),
        (
            ["--train-workers", "2", "--train-gpus-per-worker", "2", "--train-procs-per-worker", "3"],
            "one process per GPU",
        ),
    ],
)
def test_bad_training_shapes_fail_with_the_flag_named(tmp_path: Path, options: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["pipeline", "compile", "--out", str(tmp_path / "p.yaml"), *options])
    assert result.exit_code == 2 and message in result.output and "--train-workers" in result.output
    assert not (tmp_path / "p.yaml").exists()


def test_schema_models_reject_what_the_api_server_would() -> None:
    template = training_job.train_job_template(DistributedTraining(2, "img"))
    wrong_type = copy.deepcopy(template)
    wrong_type["spec"]["trainer"]["numNodes"] = "2"
    with pytest.raises(ValueError, match="numNodes"):
        TrainerV1alpha1TrainJob.from_dict(wrong_type)
    unknown = copy.deepcopy(template)
    unknown["spec"]["trainer"]["numNode"] = 2
    assert round_trip(TrainerV1alpha1TrainJob, unknown) != unknown


# ------------------------------------------------------------------------------------------------ manifests
def test_training_runtime_is_valid_hardened_and_mounts_the_shared_volume() -> None:
    docs = training_manifests()
    runtime = docs["TrainingRuntime"]
    assert round_trip(TrainerV1alpha1TrainingRuntime, runtime) == runtime
    assert runtime["metadata"]["name"] == training_job.RUNTIME_NAME
    assert runtime["spec"]["mlPolicy"]["torch"] == {}  # the torch plugin: PET_* variables for a bare torchrun
    [node] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    pod = node["template"]["spec"]["template"]["spec"]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "node"}, "spec": node["template"]["spec"]}
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)  # the pod template, by the Kubernetes schema

    [container] = pod["containers"]
    assert container["name"] == training_job.TRAINER_CONTAINER
    assert container["command"] == training_job.TRAIN_COMMAND
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and security["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["training"] == training_job.TRAINING_MOUNT
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [training_job.TRAINING_CLAIM]
    claim = docs["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == training_job.TRAINING_CLAIM
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes at once


def test_trainjob_role_lets_the_pipeline_create_follow_and_delete_trainjobs_only() -> None:
    docs = training_manifests()
    assert docs["Role"]["rules"] == [
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["trainjobs"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        }
    ]
    binding = docs["RoleBinding"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert {(s["name"], s["namespace"]) for s in binding["subjects"]} == {
        ("recsys-deployer", "recsys"),
        ("default-editor", "recsys"),
    }
    listed = yaml.safe_load((ROOT / "manifests" / "base" / "kustomization.yaml").read_text())["resources"]
    assert TRAINING_YAML.name in listed


# ------------------------------------------------------------------------------------------------ launch and wait
class FakeTrainJobs:
    """Stands in for kubernetes.client.CustomObjectsApi (no API server here). `script` gives the TrainJob's
    conditions on successive reads; creating the job "runs" it: rank 0's model dir appears on the shared volume."""

    def __init__(self, script: list[Any], writes_model: bool = True) -> None:
        self.script, self.writes_model = script, writes_model
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.data_seen: list[str] = []

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict
    ) -> dict:
        self.calls.append("create")
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        self.objects[name] = copy.deepcopy(body)
        args = body["spec"]["trainer"]["args"]
        data, out = Path(args[args.index("--data") + 1]), Path(args[args.index("--out") + 1])
        self.data_seen = sorted(p.name for p in data.iterdir())
        if self.writes_model:
            out.mkdir(parents=True)
            (out / "model_version").write_text("v-ddp\n")
        return body

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> dict:
        self.calls.append("get")
        conditions = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if conditions == "503":
            raise ApiException(status=503, reason="Service Unavailable")
        return {**self.objects[name], "status": {"conditions": conditions}}

    def delete_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                        **kwargs: Any) -> dict:  # fmt: skip
        self.calls.append("delete")
        del self.objects[name]
        return {}


RUNNING = [{"type": "Created", "status": "True", "reason": "JobsCreationSucceeded"}]
COMPLETE = [*RUNNING, {"type": "Complete", "status": "True", "reason": "JobsCompleted"}]
FAILED = [*RUNNING, {"type": "Failed", "status": "True", "reason": "JobsFailed", "message": "jobset node-1 OOMKilled"}]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def launch(tmp_path: Path, api: FakeTrainJobs, timeout_s: int = 600) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "recommendation_items.parquet").write_bytes(b"x")
    template = training_job.train_job_template(DistributedTraining(2, "img", timeout_s=timeout_s))
    clock = Clock()
    return training_job.train_on_cluster(
        data, tmp_path / "model", template, namespace="recsys", key="minio://b/run-1/train/model", split="temporal",
        epochs=3, seed=1, work_root=tmp_path / "shared", api=api, poll_s=30, sleep=clock.sleep, clock=clock,
    )  # fmt: skip


def test_a_completed_job_hands_its_model_on_and_is_cleaned_up(tmp_path: Path) -> None:
    api = FakeTrainJobs([RUNNING, "503", RUNNING, COMPLETE])
    model_dir = launch(tmp_path, api)
    assert (model_dir / "model_version").read_text().strip() == "v-ddp"
    assert api.data_seen == ["recommendation_items.parquet"]  # staged on the shared volume before the job started
    assert api.calls == ["create", "get", "get", "get", "get", "delete"]  # a 503 while waiting is retried
    assert api.objects == {} and list((tmp_path / "shared").iterdir()) == []


def test_a_failed_job_raises_its_failure_condition_and_is_kept_for_its_logs(tmp_path: Path) -> None:
    api = FakeTrainJobs([RUNNING, FAILED])
    with pytest.raises(TrainJobError, match="failed: JobsFailed: jobset node-1 OOMKilled") as failure:
        launch(tmp_path, api)
    name = training_job.job_name("minio://b/run-1/train/model")
    assert f"recsys/{name}" in str(failure.value) and "kubectl -n recsys logs" in str(failure.value)
    assert "delete" not in api.calls and name in api.objects
    assert not (tmp_path / "model").exists()


def test_a_job_past_its_timeout_is_deleted_and_the_step_fails(tmp_path: Path) -> None:
    api = FakeTrainJobs([RUNNING])
    with pytest.raises(TrainJobError, match=r"did not complete within 600 s \(true conditions: Created\); deleted"):
        launch(tmp_path, api, timeout_s=600)
    assert api.calls.count("get") == 21 and api.calls[-1] == "delete" and api.objects == {}


def test_a_retried_step_waits_for_the_job_it_already_created(tmp_path: Path) -> None:
    api = FakeTrainJobs([COMPLETE])
    template = training_job.train_job_template(DistributedTraining(2, "img"))
    manifest = training_job.train_job_manifest(template, "recsys-train-a", "recsys", str(tmp_path), "temporal", 1, 1)
    api.objects["recsys-train-a"] = manifest  # made by the first try
    assert training_job.run_train_job(manifest, api=api, timeout_s=60, sleep=lambda _: None)["metadata"]
    assert api.calls == ["create", "get"]


def test_a_job_that_wrote_no_model_fails_the_step(tmp_path: Path) -> None:
    api = FakeTrainJobs([COMPLETE], writes_model=False)
    with pytest.raises(TrainJobError, match="wrote no model dir"):
        launch(tmp_path, api)


def test_job_names_are_stable_per_artifact_and_valid_dns_labels() -> None:
    first = training_job.job_name("minio://b/run-1/train/model")
    assert first == training_job.job_name("minio://b/run-1/train/model")
    assert first != training_job.job_name("minio://b/run-2/train/model")
    assert len(first) <= 63 and first.replace("-", "").isalnum() and first[0].isalpha()
