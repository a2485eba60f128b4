"""The quality table on the default synthetic data: the served model (two-tower + item-item rerank), the two-tower
alone, popularity, ItemKNN and EASE on the temporal and random splits, mean +- std over seeds. Each seed generates
its own data set and drives the split and the training run (`recsys train`: early stopping on validation,
baselines fitted on the same train part).

bench/quality.py puts the table in the quality section of `make bench`; alone:
`python -m bench.synthetic_quality [--quick]` prints it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import QUALITY_METHODS, metrics_by_method, table
from bench.fixtures import QUICK_SIZES, generate_data
from recsys.contract import DEFAULT_SIZES

SEEDS = (42, 43, 44)
SPLITS = ("temporal", "random")
METHODS = QUALITY_METHODS
TABLE_METRICS = ("ndcg@10", "recall@10", "ndcg@50", "recall@50")


@dataclass(frozen=True)
class QualityRow:
    split: str
    method: str
    mean: dict[str, float]  # metric (e.g. "ndcg@10") -> mean over the seeds
    std: dict[str, float]  # metric -> sample standard deviation over the seeds (0 for a single seed)
    seeds: tuple[int, ...]
    per_seed: tuple[dict[str, float], ...]  # every metric of each seed's run, in `seeds` order


def synthetic_quality(
    workdir: Path,
    sizes: dict[str, int] | None = None,
    seeds: tuple[int, ...] = SEEDS,
    splits: tuple[str, ...] = SPLITS,
    epochs: int | None = None,
) -> list[QualityRow]:
    """One row per split and method (in SPLITS x METHODS order) over `seeds`; data and models go under `workdir`.

    `sizes` defaults to the default synthetic data (contract.DEFAULT_SIZES); `epochs` to `recsys train`'s own
    (early-stopped) recipe.
    """
    sizes = sizes or DEFAULT_SIZES
    runs: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for seed in seeds:
        data = generate_data(workdir / f"data-{seed}", **sizes, seed=seed)
        for split in splits:
            metrics = _train_and_score(data, workdir / f"model-{seed}-{split}", split, seed, epochs)
            for method, values in metrics_by_method(metrics).items():
                runs[split, method].append(values)
    return [aggregate(split, method, runs[split, method], seeds) for split in splits for method in METHODS]


def markdown_table(rows: list[QualityRow], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """A markdown table with one `mean ± std` cell per metric."""
    body = [[row.split, row.method] + [f"{row.mean[m]:.4f} ± {row.std[m]:.4f}" for m in metrics] for row in rows]
    return table(["split", "method", *metrics], body)


def _train_and_score(data: Path, out: Path, split: str, seed: int, epochs: int | None) -> dict:
    from recsys.model.artifacts import METRICS_FILE
    from recsys.model.config import Hyperparameters
    from recsys.model.train import train

    recipe = Hyperparameters(seed=seed) if epochs is None else Hyperparameters(seed=seed, epochs=epochs)
    train(data, out, recipe, split=split)
    return json.loads((out / METRICS_FILE).read_text())


def aggregate(split: str, method: str, runs: list[dict[str, float]], seeds: tuple[int, ...]) -> QualityRow:
    values = {metric: np.array([run[metric] for run in runs]) for metric in runs[0]}
    return QualityRow(
        split=split,
        method=method,
        mean={m: float(v.mean()) for m, v in values.items()},
        std={m: float(v.std(ddof=1)) if v.size > 1 else 0.0 for m, v in values.items()},
        seeds=tuple(seeds),
        per_seed=tuple(runs),
    )


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        found = synthetic_quality(Path(tmp), QUICK_SIZES if quick else None, epochs=2 if quick else None)
    print(markdown_table(found))
