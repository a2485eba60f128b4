"""Settings that let the same code run at a million items: the HNSW build's memory follows the table's size, the
batch top-k bounds its score blocks, and the generator's community draw no longer holds users x communities."""

from __future__ import annotations

import numpy as np
import pytest

from recsys import publish
from recsys.data import entities
from recsys.vector_index import tables

pytestmark = pytest.mark.unit


def test_hnsw_build_memory_grows_with_the_graph_between_floor_and_cap() -> None:
    assert tables.hnsw_build_memory_mb(100_000, 64) == tables.HNSW_MAINTENANCE_WORK_MEM_MIN_MB
    # 1M x 64-d: ~971 bytes per element measured, plus a quarter
    assert tables.hnsw_build_memory_mb(1_000_000, 64) == int(1_000_000 * 971 * 1.25 / 2**20)
    assert tables.hnsw_build_memory_mb(50_000_000, 64) == tables.HNSW_MAINTENANCE_WORK_MEM_MAX_MB


def test_top_k_in_small_score_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    users, items = rng.standard_normal((37, 8)), rng.standard_normal((50, 8))
    seen = [rng.choice(50, size=int(rng.integers(0, 5)), replace=False) for _ in range(37)]
    whole = publish.top_k_per_user(users, items, seen, k=7)
    monkeypatch.setattr(publish, "TOP_K_BLOCK_FLOATS", 120)  # 2 users per block at 50 items
    blocks = publish.top_k_per_user(users, items, seen, k=7)
    np.testing.assert_array_equal(whole[0], blocks[0])
    np.testing.assert_array_equal(whole[1], blocks[1])


def test_community_draw_in_blocks_is_the_same_stream_as_one_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entities, "USER_BLOCK_DRAWS", 1000)  # 10 users per block at 100 communities
    one = np.argsort(np.random.default_rng(9).random((95, 100)), axis=1)[:, : entities.COMMUNITIES_PER_USER]
    rng = np.random.default_rng(9)
    assert np.array_equal(entities._random_communities(rng, 95, 100), one)
    reference = np.random.default_rng(9)
    reference.random((95, 100))
    assert rng.random() == reference.random()  # what comes after is drawn from the same place
