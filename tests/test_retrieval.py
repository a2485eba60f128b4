"""Exact retrieval against a brute-force reference, the strategy choice and the widening loop (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.filters import FilterResult
from recsys.retrieval import EXACT_MAX_ITEMS, WIDEN_FACTOR, ExactRetriever, choose_strategy, widen_until_k

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


class CountingRetriever(ExactRetriever):
    def __init__(self, matrix: np.ndarray):
        super().__init__(matrix)
        self.pools: list[int] = []

    def search(self, queries: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        self.pools.append(n)
        return super().search(queries, n)


def keep_even_rows(rows: np.ndarray, scores: np.ndarray) -> FilterResult:
    even = rows % 2 == 0
    return FilterResult(rows=rows[even], scores=scores[even], removed={"odd": int((~even).sum())})


def test_widening_retrieves_wider_pools_until_k_survive() -> None:
    rng = np.random.default_rng(1)
    retriever = CountingRetriever(rng.normal(size=(1000, 16)).astype(np.float32))

    def keep_every_other(rows: np.ndarray, scores: np.ndarray) -> FilterResult:
        return FilterResult(rows=rows[::2], scores=scores[::2], removed={"every other": len(rows) // 2})

    result = widen_until_k(retriever, rng.normal(size=16).astype(np.float32), 10, 30, keep_every_other)
    assert retriever.pools == [10, 10 * WIDEN_FACTOR, 10 * WIDEN_FACTOR**2]  # 5, then 20, then 80 survive
    assert len(result.rows) == 80 and list(result.scores) == sorted(result.scores, reverse=True)


def test_widening_stops_at_the_retrievers_widest_pool() -> None:
    retriever = CountingRetriever(np.eye(8, 16, dtype=np.float32))
    result = widen_until_k(retriever, np.ones(16, dtype=np.float32), 2, 100, keep_even_rows)
    assert retriever.pools == [2, 8] and sorted(result.rows) == [0, 2, 4, 6]


def test_widening_starts_from_a_pool_already_retrieved() -> None:
    retriever = CountingRetriever(np.eye(8, 16, dtype=np.float32))
    first = retriever.search(np.ones((1, 16), dtype=np.float32), 8)[0]
    result = widen_until_k(retriever, np.ones(16, dtype=np.float32), 8, 2, keep_even_rows, first)
    assert retriever.pools == [8] and len(result.rows) == 4  # no second retrieval
