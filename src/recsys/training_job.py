"""Distributed training on the cluster: a Kubeflow Trainer v2 TrainJob that runs `recsys train` under torchrun.

Why Trainer v2 (trainer.kubeflow.org TrainJob) and not training-operator v1 (kubeflow.org PyTorchJob): Trainer is
Kubeflow's current training project and v1 is in maintenance only. A TrainJob names a runtime (our TrainingRuntime
`recsys-torch`, manifests/base/training.yaml) that holds the pod template; the Trainer's torch plugin sets
PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK and PET_MASTER_ADDR/PORT, so a bare `torchrun` needs no flags.

Shared storage: the ReadWriteMany PVC `recsys-training`, mounted at TRAINING_MOUNT in both the pipeline's train step
and every TrainJob pod. The step copies the Dataset artifact to `<mount>/<job>/data`, the job's rank 0 writes the
model dir to `<mount>/<job>/model`, and the step copies it into its Model artifact (the same artifact as in-pod
training), then deletes the job and its folder. A failed job is kept, for its pods' logs.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from recsys.deploy import CustomObjects, custom_objects_api

TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
TRAINJOB_PLURAL = "trainjobs"
RUNTIME_NAME = "recsys-torch"  # the TrainingRuntime in manifests/base/training.yaml
TRAINER_CONTAINER = "node"  # the runtime's container the TrainJob's `trainer` overrides (Trainer's convention)
TRAINING_CLAIM = "recsys-training"  # the ReadWriteMany PVC the step and the job's pods share
TRAINING_MOUNT = "/mnt/training"
GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY = {"app.kubernetes.io/managed-by": "recsys-pipeline", "app.kubernetes.io/part-of": "recsys"}
# --no-python: torchrun starts the `recsys` console script itself; events were merged by the pipeline already
TRAIN_COMMAND = ["torchrun", "--no-python", "recsys", "train", "--no-events"]


class TrainJobError(RuntimeError):
    """The TrainJob failed, timed out, or left no model."""


class TrainJobApi(CustomObjects, Protocol):
    """deploy's slice of kubernetes.client.CustomObjectsApi plus delete (a fake stands in for it in tests)."""

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...


@dataclass(frozen=True)
class DistributedTraining:
    """N workers (pods) x M processes each; with GPUs, one process per GPU (nccl), else CPU processes (gloo)."""

    workers: int
    image: str
    procs_per_worker: int = 1
    gpus_per_worker: int = 0
    cpu_per_worker: str = "4"
    memory_per_worker: str = "8Gi"
    timeout_s: int = 6 * 3600

    def __post_init__(self) -> None:
        if self.workers < 1 or self.procs_per_worker < 1 or self.gpus_per_worker < 0:
            raise ValueError("train workers and processes per worker must be >= 1, GPUs per worker >= 0")
        if self.gpus_per_worker and self.procs_per_worker not in (1, self.gpus_per_worker):
            raise ValueError(
                f"with {self.gpus_per_worker} GPUs per worker each worker runs one process per GPU:"
                f" leave the processes per worker at 1 or set {self.gpus_per_worker}"
            )
        if not self.image:
            raise ValueError("the training image must not be empty")
        if self.timeout_s < 1:
            raise ValueError(f"timeout_s must be >= 1, got {self.timeout_s}")

    @property
    def processes_per_worker(self) -> int:
        return self.gpus_per_worker or self.procs_per_worker


def distributed_training(
    workers: int, procs_per_worker: int, gpus_per_worker: int, image: str
) -> DistributedTraining | None:
    """None for the default (1 worker, 1 process, no GPU: in-pod training as always), else the TrainJob's shape."""
    if (workers, procs_per_worker, gpus_per_worker) == (1, 1, 0):
        return None
    return DistributedTraining(workers, image, procs_per_worker=procs_per_worker, gpus_per_worker=gpus_per_worker)


def train_job_template(training: DistributedTraining) -> dict[str, Any]:
    """The TrainJob without its run: no name, namespace or data/model paths (train_job_manifest adds them).
    The pipeline compiles this into its YAML."""
    limits = {"cpu": training.cpu_per_worker, "memory": training.memory_per_worker}
    if training.gpus_per_worker:
        limits[GPU_RESOURCE] = str(training.gpus_per_worker)
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": {"labels": dict(MANAGED_BY)},
        "spec": {
            "runtimeRef": {"apiGroup": TRAINER_GROUP, "kind": "TrainingRuntime", "name": RUNTIME_NAME},
            "activeDeadlineSeconds": training.timeout_s,
            "trainer": {
                "image": training.image,
                "command": [*TRAIN_COMMAND, "--device", "cuda" if training.gpus_per_worker else "cpu"],
                "numNodes": training.workers,
                "numProcPerNode": training.processes_per_worker,
                "resourcesPerNode": {"requests": dict(limits), "limits": limits},
            },
        },
    }


def job_name(key: str) -> str:
    """A DNS-1035 name, the same for the same key (a retried step finds its own job): key = the Model's URI."""
    return "recsys-train-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def train_job_manifest(
    template: dict[str, Any], name: str, namespace: str, job_dir: str, split: str, epochs: int, seed: int
) -> dict[str, Any]:
    """The compiled template plus this run: name, namespace and the arguments of `recsys train`."""
    manifest = copy.deepcopy(template)
    manifest["metadata"].update(name=name, namespace=namespace)
    manifest["spec"]["trainer"]["args"] = [
        "--data", f"{job_dir}/data", "--out", f"{job_dir}/model",
        "--split", split, "--epochs", str(epochs), "--seed", str(seed),
    ]  # fmt: skip
    return manifest


def _true_conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conditions if c.get("status") == "True"}


def run_train_job(
    manifest: dict[str, Any],
    *,
    api: TrainJobApi | None = None,
    timeout_s: float,
    poll_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Create the TrainJob (or find the one a retried step made) and wait for its Complete condition.

    Raises TrainJobError with the job's Failed condition (reason and message), or after `timeout_s` (the job is
    deleted then, so it stops holding nodes). Transient API errors (429, 5xx) are retried until the deadline.
    """
    from kubernetes.client.exceptions import ApiException

    api = api or custom_objects_api()
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    where = {"group": TRAINER_GROUP, "version": TRAINER_VERSION, "namespace": namespace, "plural": TRAINJOB_PLURAL}
    try:
        api.create_namespaced_custom_object(body=copy.deepcopy(manifest), **where)
    except ApiException as exc:
        if exc.status != 409:  # 409: it exists, made by an earlier try of this step: wait for that one
            raise
    deadline = clock() + timeout_s
    conditions: dict[str, dict[str, Any]] = {}
    while True:
        try:
            job = api.get_namespaced_custom_object(name=name, **where)
            conditions = _true_conditions(job)
        except ApiException as exc:
            if exc.status != 429 and (exc.status or 0) < 500:
                raise
            job = {}
        if "Complete" in conditions:
            return job
        if "Failed" in conditions:
            failed = conditions["Failed"]
            raise TrainJobError(
                f"TrainJob {namespace}/{name} failed: {failed.get('reason', '?')}: {failed.get('message', '')}"
                f" (kept for its logs: kubectl -n {namespace} logs -l jobset.sigs.k8s.io/jobset-name={name})"
            )
        if clock() >= deadline:
            api.delete_namespaced_custom_object(name=name, propagation_policy="Background", **where)
            seen = ", ".join(sorted(conditions)) or "none"
            raise TrainJobError(
                f"TrainJob {namespace}/{name} did not complete within {timeout_s:.0f} s (true conditions: {seen});"
                " deleted it"
            )
        sleep(poll_s)


def train_on_cluster(
    data_dir: Path,
    model_dir: Path,
    template: dict[str, Any],
    *,
    namespace: str,
    key: str,
    split: str,
    epochs: int,
    seed: int,
    work_root: Path = Path(TRAINING_MOUNT),
    api: TrainJobApi | None = None,
    poll_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """Stage the data on the shared volume, run the TrainJob, copy its model dir to `model_dir`; clean up.
    Returns `model_dir`. `key` names the job (the Model artifact's URI: unique per run and task)."""
    name = job_name(key)
    job_dir = Path(work_root) / name
    shutil.rmtree(job_dir, ignore_errors=True)  # what an earlier, failed try of this step left
    shutil.copytree(data_dir, job_dir / "data")
    manifest = train_job_manifest(template, name, namespace, str(job_dir), split, epochs, seed)
    api = api or custom_objects_api()
    run_train_job(manifest, api=api, timeout_s=template["spec"]["activeDeadlineSeconds"], poll_s=poll_s,
                  sleep=sleep, clock=clock)  # fmt: skip
    written = job_dir / "model"
    if not written.is_dir() or not any(written.iterdir()):
        raise TrainJobError(f"TrainJob {namespace}/{name} completed but wrote no model dir at {written}")
    shutil.copytree(written, model_dir, dirs_exist_ok=True)
    meta = manifest["metadata"]
    api.delete_namespaced_custom_object(
        group=TRAINER_GROUP, version=TRAINER_VERSION, namespace=meta["namespace"], plural=TRAINJOB_PLURAL,
        name=name, propagation_policy="Background",
    )  # fmt: skip
    shutil.rmtree(job_dir, ignore_errors=True)
    return model_dir
