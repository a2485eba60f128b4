"""The synthetic-data quality table of the bench: one row per split and method, mean +- std over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.synthetic_quality import METHODS, markdown_table, synthetic_quality

pytestmark = pytest.mark.unit


def test_rows_hold_mean_and_std_over_seeds(tmp_path: Path) -> None:
    sizes = {"n_users": 60, "n_items": 150, "n_interactions": 1500}
    rows = synthetic_quality(tmp_path, sizes, seeds=(1, 2), splits=("random",), epochs=1)
    assert [(row.split, row.method) for row in rows] == [("random", method) for method in METHODS]
    for row in rows:
        assert row.seeds == (1, 2) and len(row.per_seed) == 2
        runs = np.array([run["ndcg@10"] for run in row.per_seed])
        assert row.mean["ndcg@10"] == pytest.approx(runs.mean())
        assert row.std["ndcg@10"] == pytest.approx(runs.std(ddof=1))
        assert all(0.0 <= value <= 1.0 for value in row.mean.values())
    assert any(row.std["recall@10"] > 0 for row in rows)  # two data sets, two different results
    rendered = markdown_table(rows, ("ndcg@10",))
    assert rendered.splitlines()[0] == "| split | method | ndcg@10 |"
    assert f"{rows[0].mean['ndcg@10']:.4f} ± {rows[0].std['ndcg@10']:.4f}" in rendered
