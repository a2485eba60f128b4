"""Exact retrieval against a brute-force reference, and the strategy choice (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.retrieval import EXACT_MAX_ITEMS, ExactRetriever, choose_strategy

pytestmark = pytest.mark.unit


def test_exact_top_n_equals_a_full_sort_by_cosine() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(2000, 64)).astype(np.float32) * rng.uniform(0.5, 3, size=(2000, 1)).astype(np.float32)
    queries = rng.normal(size=(5, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    for (rows, scores), query in zip(ExactRetriever(items).search(queries, 50), queries, strict=True):
        reference = np.argsort(-(unit @ query), kind="stable")[:50]
        assert list(rows) == list(reference)
        np.testing.assert_allclose(scores, (unit @ query)[reference], rtol=1e-5)


def test_exact_n_beyond_the_catalogue_returns_everything_sorted() -> None:
    items = np.eye(4, 64, dtype=np.float32)
    [(rows, scores)] = ExactRetriever(items).search(items[2:3], 10)
    assert rows[0] == 2 and sorted(rows) == [0, 1, 2, 3] and scores[0] == pytest.approx(1.0)


def test_strategy_defaults_by_catalogue_size() -> None:
    assert choose_strategy("auto", 10_000) == "exact"
    assert choose_strategy("auto", EXACT_MAX_ITEMS + 1) == "hnsw"
    assert choose_strategy("hnsw", 10) == "hnsw"
