"""The benchmark harness cannot rot: BENCHMARKS.md assembly, one benchmark end to end at a toy size, and the bulk
Feast writer the retrieval benchmark relies on (its rows must be exactly what Feast writes itself)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import common, scaling


@pytest.fixture()
def results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(common, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(scaling, "RESULTS_DIR", tmp_path / "results")
    return tmp_path / "results"


@pytest.mark.unit
def test_benchmarks_md_opens_with_goals_and_lists_missing(results_dir: Path) -> None:
    met = common.Goal("speed", ">= 1", "2", met=True)
    missed = common.Goal("latency", "<= 1 ms", "5 ms", met=False, limited_by="Feast call 4 ms")
    common.save(common.Result("alpha", "Alpha bench", "python -m bench alpha", "alpha body", goals=[met, missed]))
    common.save(common.Result("beta", "Beta bench", "python -m bench beta", "beta body"))

    text = common.write_benchmarks_md(["alpha", "beta", "gamma"]).read_text()

    goals_at, alpha_at, beta_at = text.index("## Goals vs measured"), text.index("## Alpha"), text.index("## Beta")
    assert goals_at < alpha_at < beta_at
    assert "| speed | >= 1 | 2 | met | alpha |" in text
    assert "| latency | <= 1 ms | 5 ms | **missed** (Feast call 4 ms) | alpha |" in text
    assert "Not run yet: gamma." in text
    assert json.loads((results_dir / "alpha.json").read_text())["machine"]["cores"] >= 1


@pytest.mark.unit
def test_fitted_exponent_recovers_a_power_law() -> None:
    sizes = [1e3, 1e4, 1e5]
    assert scaling.exponent(sizes, [3e-6 * s**1.5 for s in sizes]) == pytest.approx(1.5)


@pytest.mark.integration
def test_scaling_benchmark_runs_at_toy_size(results_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    points = [{"n_users": 30, "n_items": 200, "n_interactions": n} for n in (1000, 2000)]
    monkeypatch.setattr(scaling, "sweeps", lambda: {"interactions": points})

    result = scaling.run()

    measured = result.data["points"]["interactions"]
    assert [p["n_interactions"] for p in measured] == [1000, 2000]
    assert all(p["generate_s"] > 0 and p["epoch_s"] > 0 and p["peak_rss_mb"] > 50 for p in measured)
    assert np.isfinite(result.data["exponents"]["interactions"]["epoch_s"])
    assert "| interactions | 30 | 200 | 2000 |" in result.markdown
    assert (results_dir / "scaling.png").stat().st_size > 1000


@pytest.mark.integration
def test_bulk_feast_rows_equal_feast_written_rows(pg_dsn: str) -> None:
    import pandas as pd
    from psycopg import sql

    from bench.env import workspace
    from bench.fixtures import FeastDocuments, copy_into_feast_view, feast_table, random_vectors
    from recsys import db, feature_store, schema

    ids = [f"item_{i}" for i in range(30)]
    vectors = random_vectors(30)
    with workspace("test") as root:
        assert (root / "feature_repo" / "feature_store.yaml").is_file()
        feature_store.apply()
        now = pd.Timestamp("2026-01-01", tz="UTC")
        frame = pd.DataFrame(
            {
                schema.ITEM_ID: ids,
                schema.ITEM_VECTOR: list(vectors),
                schema.MODEL_VERSION: "v1",
                schema.EVENT_TIMESTAMP: now,
                schema.CREATED_TIMESTAMP: now,
            }
        )
        table = feast_table(schema.VIEW_ITEM_EMBEDDING)
        with db.connect() as conn:  # the session database is shared: other tests may have written this view
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
        feature_store.write_embedding_view(schema.VIEW_ITEM_EMBEDDING, frame)
        query = sql.SQL(
            "SELECT entity_key, feature_name, value, value_text, vector_value::text FROM {} ORDER BY 1, 2"
        ).format(sql.Identifier(table))
        with db.connect() as conn:
            written_by_feast = conn.execute(query).fetchall()
        copy_into_feast_view(schema.VIEW_ITEM_EMBEDDING, ids, vectors, "v1")
        with db.connect() as conn:
            written_by_copy = conn.execute(query).fetchall()
        found = FeastDocuments(feature_store.get_store(), schema.VIEW_ITEM_EMBEDDING).top_k(vectors[3], 5)

    assert len(written_by_feast) == 2 * len(ids)
    assert written_by_copy == written_by_feast
    assert set(found) == {ids[i] for i in np.argsort(-(vectors @ vectors[3]))[:5]}
