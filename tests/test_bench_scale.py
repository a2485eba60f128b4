"""The million-item scale benchmark at toy size: every step of a point runs, exponents and the exact/HNSW crossing
come out of the sweep, and the section renders (bench/scale.py; the full run needs BENCH_SCALE=1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import scale, scale_report


@pytest.mark.integration
def test_scale_benchmark_runs_at_toy_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_QUICK", "1")
    monkeypatch.setattr(scale, "RESULTS_DIR", tmp_path)

    result = scale.run()

    points = result.data["points"]
    assert [p["n_items"] for p in points] == [300, 900]
    for p in points:
        assert p["publish"]["hnsw_build_s"] > 0 and p["publish"]["copy_s"] > 0
        assert p["retrieval"]["methods"]["exact"]["recall@100"] == pytest.approx(1.0)
        assert 0 < p["retrieval"]["methods"]["hnsw ef_search=200"]["recall@100"] <= 1
        assert {s: v["errors"] for s, v in p["predictor"].items()} == {"exact": 0, "hnsw": 0}
        assert all(v["rss_mb"] > 100 and v["requests"] > 0 for v in p["predictor"].values())
        assert 0 < p["known_item_ids"] <= 300  # ids the 300-item training data had interactions for
    assert np.isfinite(result.data["exponents"]["generate"])
    assert "| COPY |" in result.markdown and "exponent" in result.markdown
    assert (tmp_path / "scale.png").stat().st_size > 1000


@pytest.mark.unit
def test_crossing_of_two_power_laws() -> None:
    """exact 1 ms at 1k items growing linearly, HNSW 4 ms flat: they meet at 4k items."""
    points = [
        {"n_items": n, "retrieval": {"methods": {"exact": {"p50": n / 1000}, "hnsw ef_search=200": {"p50": 4.0}}}}
        for n in (1000, 2000)
    ]
    fits = {"exact top-100 p50 (ms)": 1.0, "HNSW top-100 p50, ef_search 200 (ms)": 0.0}
    assert scale_report.crossing(points, fits) == pytest.approx(4000)


@pytest.mark.unit
def test_make_bench_runs_the_scale_section_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_QUICK", raising=False)
    monkeypatch.delenv("BENCH_SCALE", raising=False)
    assert not scale.enabled()
    monkeypatch.setenv("BENCH_SCALE", "1")
    assert scale.enabled()
