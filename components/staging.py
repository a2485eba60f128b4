"""Glue the components share: moving the data set between artifacts and the feature repo, the quality gate.

Plain functions (no kfp), imported inside component bodies; the image installs this package with recsys.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from recsys import schema
from recsys.contract import GATE_METRIC

LOGGED_METRICS = (GATE_METRIC, "ndcg@10")


def copy_data_files(source: Path, target: Path) -> list[Path]:
    """Copy the three parquet files from `source` into `target` (created); a missing file is an error."""
    source, target = Path(source), Path(target)
    missing = [name for name in schema.DATA_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"data set {source} lacks {', '.join(missing)}")
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in schema.DATA_FILES:
        partial = target / f".{name}.partial"
        shutil.copyfile(source / name, partial)
        copied.append(partial.replace(target / name))  # atomic: a reader never sees half a file
    return copied


def feature_repo_data_dir() -> Path:
    """The folder the Feast file sources read (`data/` of the repo named by RECSYS_FEATURE_REPO)."""
    from recsys import feature_store

    return feature_store.resolve_repo() / "data"


def stage_into_feature_repo(dataset_dir: Path) -> Path:
    """Put the data set where the Feast file sources read it; returns that folder.

    Each Feast step stages the data itself: on a cluster every step is a fresh pod.
    """
    data_dir = feature_repo_data_dir()
    if Path(dataset_dir).resolve() != data_dir.resolve():
        copy_data_files(dataset_dir, data_dir)
    return data_dir


def registry_file(repo: Path | None = None) -> Path | None:
    """The repo's Feast file registry, or None when the registry is not a local file (sql, gs://, s3://)."""
    from recsys import feature_store

    repo = feature_store.resolve_repo(repo)
    registry = yaml.safe_load((repo / "feature_store.yaml").read_text()).get("registry")
    if isinstance(registry, dict):
        if registry.get("registry_type", "file") != "file":
            return None
        registry = registry.get("path")
    if not registry or "://" in str(registry):
        return None
    path = Path(registry)
    return path if path.is_absolute() else repo / path


def save_registry(target: Path) -> None:
    """Copy the file registry `feast apply` wrote into an artifact (later steps run in other pods)."""
    source = registry_file()
    if source is None:
        Path(target).write_text("")  # a remote registry: nothing to carry
        return
    shutil.copyfile(source, target)


def restore_registry(saved: Path) -> None:
    """Put a registry saved by `save_registry` back into the repo (no-op for an empty / remote one)."""
    target = registry_file()
    saved = Path(saved)
    if target is None or saved.stat().st_size == 0 or saved.resolve() == target.resolve():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(saved, partial)
    partial.replace(target)


def quality_gate(metrics: Mapping[str, Any], min_recall_at_10: float) -> bool:
    """Publish only a model that beats the popularity baseline and reaches the threshold on Recall@10."""
    try:
        model = float(metrics["model"][GATE_METRIC])
        popularity = float(metrics["baselines"]["popularity"][GATE_METRIC])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"metrics lack model and popularity {GATE_METRIC}: {exc}") from exc
    return model > popularity and model >= min_recall_at_10


def metrics_to_log(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The flat name -> value pairs a KFP Metrics artifact shows: the served model's (two-tower + rerank), the
    two-tower retrieval stage's alone and each baseline's Recall/NDCG@10."""
    flat = {f"model_{name}": float(metrics["model"][name]) for name in LOGGED_METRICS}
    if "retrieval" in metrics:  # models trained before the rerank stage have no separate retrieval row
        flat.update({f"retrieval_{name}": float(metrics["retrieval"][name]) for name in LOGGED_METRICS})
    for baseline, values in sorted(metrics["baselines"].items()):
        flat.update({f"{baseline}_{name}": float(values[name]) for name in LOGGED_METRICS})
    return flat
