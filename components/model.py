"""Steps 5 and 6: train the two-tower model (in the step's pod, or as a Kubeflow Trainer TrainJob); evaluate it
against the baselines and decide the quality gate."""

# no `from __future__ import annotations`: kfp reads the real annotation objects
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.settings import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def train(data: Input[Dataset], split: str, epochs: int, seed: int, model: Output[Model]) -> None:
    """The model dir (towers, mappings, model_version, metrics.json) as the `model` artifact."""
    from pathlib import Path

    from recsys.model.artifacts import MODEL_VERSION_FILE
    from recsys.model.config import Hyperparameters
    from recsys.model.train import train as train_model

    def log_epoch(report) -> None:  # the step's log shows training progress
        print(f"epoch {report.epoch}: loss {report.loss:.4f} valid {report.valid}", flush=True)

    hp = Hyperparameters(epochs=int(epochs), seed=int(seed))
    model_dir = train_model(Path(data.path), Path(model.path), hp, split=split, on_epoch=log_epoch)
    model.metadata["model_version"] = (model_dir / MODEL_VERSION_FILE).read_text().strip()
    model.metadata["framework"] = "pytorch"


@dsl.component(**COMPONENT_OPTIONS)
def train_distributed(
    data: Input[Dataset], split: str, epochs: int, seed: int, namespace: str, job_template: str, model: Output[Model]
) -> None:
    """The same `model` artifact, trained by a Kubeflow Trainer TrainJob (N workers x M processes under torchrun)
    that `job_template` (JSON, compiled into the pipeline) describes; this step stages the data on the shared
    volume, waits for the job and copies the model dir back (recsys.training_job)."""
    import json
    from pathlib import Path

    from recsys.model.artifacts import MODEL_VERSION_FILE
    from recsys.training_job import train_on_cluster

    model_dir = train_on_cluster(
        Path(data.path),
        Path(model.path),
        json.loads(job_template),
        namespace=namespace,
        key=model.uri,
        split=split,
        epochs=int(epochs),
        seed=int(seed),
    )
    model.metadata["model_version"] = (model_dir / MODEL_VERSION_FILE).read_text().strip()
    model.metadata["framework"] = "pytorch"
    model.metadata["trained_by"] = "TrainJob"


@dsl.component(**COMPONENT_OPTIONS)
def evaluate(
    data: Input[Dataset], model: Input[Model], split: str, seed: int, min_recall_at_10: float, metrics: Output[Metrics]
) -> bool:
    """Test-split Recall/NDCG@10 of the model and every baseline as KFP Metrics; returns the quality gate:
    True when the model beats popularity and reaches `min_recall_at_10`."""
    from pathlib import Path

    from components.staging import metrics_to_log, quality_gate
    from recsys.model.evaluate import evaluate_model_and_baselines

    result = evaluate_model_and_baselines(Path(data.path), Path(model.path), split, seed=int(seed))
    for name, value in metrics_to_log(result).items():
        metrics.log_metric(name, value)
    passed = quality_gate(result, float(min_recall_at_10))
    metrics.log_metric("quality_gate_passed", float(passed))
    return passed
