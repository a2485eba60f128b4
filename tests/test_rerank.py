"""The rerank stage (recsys.model.rerank, rerank_offline): item-item weights, the blended score, files, the blend
weight chosen on validation, bad input, and the reranker travelling with the model dir."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recsys import schema
from recsys.model import artifacts
from recsys.model import rerank as rr
from recsys.model.baselines import ease_weights
from recsys.model.evaluate import rank_metrics
from recsys.model.inputs import fit_feature_space
from recsys.model.rerank_offline import fit_reranker, history_matrix, reranked_scores
from recsys.model.towers import ItemTower, UserTower

pytestmark = pytest.mark.unit


def paired_matrix(n_users: int = 300, n_pairs: int = 20, n_noise: int = 2, seed: int = 0) -> sp.csr_matrix:
    """Planted structure: items 2p and 2p+1 are bought together; each user buys 3 whole pairs and n_noise items."""
    rng = np.random.default_rng(seed)
    n_items = 2 * n_pairs
    rows, cols = [], []
    for user in range(n_users):
        for pair in rng.choice(n_pairs, size=3, replace=False):
            rows += [user, user]
            cols += [2 * pair, 2 * pair + 1]
        noise = rng.choice(n_items, size=n_noise, replace=False)
        rows += [user] * n_noise
        cols += noise.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # a noise pick that repeats a pair item counts once
    return matrix


def ndcg(heldout: list[np.ndarray], exclude: list[np.ndarray]) -> Callable[[np.ndarray], float]:
    return lambda ranked: rank_metrics(ranked, heldout, exclude, (10,))["ndcg@10"]


def reranker(weights: sp.csr_matrix, weight: float = 1.0) -> rr.ItemItemReranker:
    return rr.ItemItemReranker(weights=weights, weight=weight, method="ease", neighbours=5, ease_lambda=10.0)


@pytest.mark.parametrize("method", rr.METHODS)
def test_weights_recover_the_planted_pairs(method: str) -> None:
    weights = rr.item_item_weights(paired_matrix(), method, 10.0 if method == "ease" else None, neighbours=5)
    strongest = np.asarray(weights.argmax(axis=1)).ravel()
    assert (strongest == np.arange(40) ^ 1).all()  # each item's strongest neighbour is its partner
    # history [item 0]: of equally scored candidates, its partner rises to the top
    scores = reranker(weights).score(np.array([5, 1, 7]), np.zeros(3), [0])
    assert scores.argmax() == 1 and scores[1] == pytest.approx(1.0)  # normalised by the largest |item-item|


def test_truncation_keeps_each_rows_largest_weights_by_magnitude() -> None:
    matrix = paired_matrix()
    active, full = ease_weights(matrix, 10.0)
    assert (active == np.arange(40)).all()
    kept = rr.item_item_weights(matrix, "ease", 10.0, neighbours=3)
    assert kept.shape == (40, 40) and (np.diff(kept.indptr) == 3).all()
    for row in range(40):
        largest = set(np.argsort(-np.abs(full[row]))[:3].tolist())
        start, end = kept.indptr[row], kept.indptr[row + 1]
        assert set(kept.indices[start:end].tolist()) == largest
        np.testing.assert_allclose(kept[row].toarray().ravel()[list(largest)], full[row, list(largest)], rtol=1e-5)
    with pytest.raises(rr.RerankerError, match="neighbours"):
        rr.item_item_weights(matrix, "ease", 10.0, neighbours=0)
    with pytest.raises(rr.RerankerError, match="unknown reranker method"):
        rr.item_item_weights(matrix, "svd", None)


@pytest.mark.parametrize("half_life", [None, 2.0])
@pytest.mark.parametrize("read_from", ["history rows", "candidate columns"])
def test_single_user_score_equals_the_batch_path_and_handles_unknown_items(
    read_from: str, half_life: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rr, "HISTORY_ROWS_MAX_ENTRIES", 10**9 if read_from == "history rows" else -1)
    weights = rr.item_item_weights(paired_matrix(), "ease", 10.0, neighbours=8)
    model = replace(reranker(weights, weight=0.5), half_life=half_life)
    rng = np.random.default_rng(1)
    candidates = np.stack([rng.choice(40, size=10, replace=False) for _ in range(4)])
    base = rng.random((4, 10)).astype(np.float32)
    histories = [rng.choice(40, size=5, replace=False) for _ in range(4)]  # oldest first
    votes = np.tile(rr.recency_weights(5, half_life), 4)
    history = sp.csr_matrix((votes, (np.repeat(np.arange(4), 5), np.concatenate(histories))), shape=(4, 40))
    batch = model.score_batch(candidates, base, history)
    for row in range(4):
        single = model.score(candidates[row], base[row], histories[row].tolist())
        np.testing.assert_allclose(single, batch[row], rtol=1e-5, atol=1e-6)
    # an item listed twice counts once, as its newest occurrence
    for repeated, unique in (([0, 0, 2], [0, 2]), ([0, 2, 0], [2, 0])):
        np.testing.assert_allclose(
            model.score(np.array([1, 3]), np.zeros(2), repeated), model.score(np.array([1, 3]), np.zeros(2), unique)
        )
    # -1 = unknown to the model: a candidate keeps its two-tower score, a history item is skipped
    with_unknown = model.score(np.array([-1, 1]), np.array([0.3, 0.2]), [0, -1])
    assert with_unknown[0] == pytest.approx(0.3)
    np.testing.assert_allclose(with_unknown, model.score(np.array([-1, 1]), np.array([0.3, 0.2]), [0]))
    # duplicated candidates get equal scores
    twice = model.score(np.array([1, 3, 1]), np.zeros(3), [0, 2])
    assert twice[0] == twice[2] != 0
    # no history: the two-tower order stands
    np.testing.assert_allclose(model.score(np.array([3, 4]), np.array([0.1, 0.9]), []), [0.1, 0.9])


def test_bad_input_is_rejected_with_a_clear_error() -> None:
    model = reranker(rr.item_item_weights(paired_matrix(), "ease", 10.0, neighbours=5))
    with pytest.raises(rr.RerankerError, match=r"candidate_items holds 1 position\(s\) outside \[0, 40\)"):
        model.score(np.array([0, 40]), np.zeros(2), [1])
    with pytest.raises(rr.RerankerError, match="history_items"):
        model.score(np.array([0]), np.zeros(1), [-2])
    with pytest.raises(rr.RerankerError, match="2 candidates but 3 two-tower scores"):
        model.score(np.array([0, 1]), np.zeros(3), [1])
    with pytest.raises(rr.RerankerError, match="integer item positions"):
        model.score(np.array([0.5]), np.zeros(1), [1])
    with pytest.raises(rr.RerankerError, match="half_life"):
        replace(model, half_life=0.0)
    with pytest.raises(rr.RerankerError, match="blend weight"):
        reranker(model.weights, weight=-1.0)
    with pytest.raises(rr.RerankerError, match="square"):
        reranker(sp.csr_matrix((3, 4)))


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = reranker(rr.item_item_weights(paired_matrix(), "ease", 10.0, neighbours=5), weight=0.7)
    assert rr.ItemItemReranker.load(tmp_path) is None  # a model dir without a rerank stage
    model.save(tmp_path)
    loaded = rr.ItemItemReranker.load(tmp_path)
    assert loaded is not None and loaded.config() == model.config()
    assert (loaded.weights != model.weights).nnz == 0
    args = (np.array([1, 2, 3]), np.array([0.1, 0.2, 0.3]), [0, 4])
    np.testing.assert_array_equal(loaded.score(*args), model.score(*args))
    (tmp_path / rr.RERANKER_CONFIG_FILE).unlink()
    with pytest.raises(rr.RerankerError, match="both be present"):
        rr.ItemItemReranker.load(tmp_path)


def test_reindexing_moves_the_weights_between_item_indexes() -> None:
    model = reranker(rr.item_item_weights(paired_matrix(), "ease", 10.0, neighbours=5))
    order = np.array([3, 2, -1, 1, 0])  # new item a is old item order[a]; new item 2 is unknown to the old index
    moved = model.reindexed(order)
    assert moved.n_items == 5
    assert moved.weights[1, 0] == pytest.approx(model.weights[2, 3])  # new (1, 0) = old (2, 3): a planted pair
    assert moved.weights[2].nnz == 0 and moved.weights[:, 2].nnz == 0


def test_blend_weight_is_chosen_on_validation() -> None:
    """Validation held-out item = the partner of a history item: useless two-tower scores need the item-item
    part (weight > 0); two-tower scores that already rank the held-out item first keep weight 0."""
    matrix = paired_matrix(n_users=200, n_noise=0)
    rng = np.random.default_rng(3)
    rows = np.arange(200)
    heldout, exclude = [], []
    train = matrix.tolil()
    for user in rows:
        owned = matrix[user].indices
        pair_item = rng.choice([i for i in owned if (i ^ 1) in owned])  # either side of a pair
        train[user, pair_item ^ 1] = 0  # the partner goes to validation
        heldout.append(np.array([pair_item ^ 1]))
    train = sp.csr_matrix(train)
    train.eliminate_zeros()
    exclude = [train[user].indices for user in rows]
    noise = rng.random((200, 40)).astype(np.float32)
    unweighted = {"history_for": lambda half_life: train, "valid_value": ndcg(heldout, exclude), "half_lives": (None,)}
    chosen, value = fit_reranker(train, 10.0, noise, exclude, **unweighted)
    _, towers_alone = fit_reranker(train, 10.0, noise, exclude, **unweighted, weights=(0.0,))
    assert chosen.weight > 0 and value > 0.9 and towers_alone < 0.3
    oracle = np.zeros((200, 40), np.float32)
    oracle[rows, np.concatenate(heldout)] = 1.0
    chosen, value = fit_reranker(train, 10.0, oracle, exclude, **unweighted, weights=(0.0, 2.0))
    assert chosen.weight == 0.0 and value == pytest.approx(1.0)
    # the offline score matrix: only each user's top candidates carry a (blended) score
    served = reranked_scores(chosen, noise, exclude, train, n_candidates=10)
    assert (np.isfinite(served).sum(axis=1) == 10).all()


def interactions_frame(per_user: list[list[int]]) -> pd.DataFrame:
    """Positive interactions, each user's items in time order."""
    rows = [(f"u{u}", f"i{item}", t) for u, items in enumerate(per_user) for t, item in enumerate(items)]
    frame = pd.DataFrame(rows, columns=[schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP])
    frame[schema.TIMESTAMP] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(frame[schema.TIMESTAMP], "h")
    return frame


def test_history_matrix_weighs_by_recency_as_score_does() -> None:
    train = interactions_frame([[1, 2, 1, 3], [0]])  # u0 saw i1 twice: its newest occurrence counts
    users, items = pd.Index(["u0", "u1"]), pd.Index([f"i{i}" for i in range(40)])
    matrix = history_matrix(train, users, items, np.array([0, 1]), half_life=1.0)
    np.testing.assert_allclose(matrix.toarray()[:, :4], [[0, 0.5, 0.25, 1.0], [1.0, 0, 0, 0]])
    assert matrix.nnz == 4
    assert (history_matrix(train, users, items, np.array([0]), None).toarray()[:, :4] == [[0, 1, 1, 1]]).all()
    model = replace(reranker(rr.item_item_weights(paired_matrix(), "ease", 10.0, 3)), half_life=1.0)
    candidates, base = np.array([[0, 1, 2, 3]]), np.zeros((1, 4), np.float32)
    np.testing.assert_allclose(
        model.score(candidates[0], base[0], [1, 2, 1, 3]), model.score_batch(candidates, base, matrix[:1])[0]
    )


def test_history_half_life_is_chosen_on_validation() -> None:
    """Each user has three whole pairs and, later, one half of two more pairs; the partner of the NEWEST half is
    held out: weighing history by recency finds it, weighing all alike ties it with the older half's partner."""
    rng = np.random.default_rng(5)
    sequences, heldout = [], []
    for _ in range(200):
        pairs = rng.choice(20, size=5, replace=False)
        older, newest = (2 * pairs[3:] + rng.integers(2, size=2)).tolist()
        sequences.append([*(2 * pairs[:3]).tolist(), *(2 * pairs[:3] + 1).tolist(), older, newest])
        heldout.append(np.array([newest ^ 1]))
    train = interactions_frame(sequences)
    users, items = pd.Index(sorted(train[schema.USER_ID].unique())), pd.Index([f"i{i}" for i in range(40)])
    matrix = history_matrix(train, users, items, np.arange(200), None)
    rows = users.get_indexer([f"u{u}" for u in range(200)])
    history_for = partial(history_matrix, train, users, items, rows)
    exclude = [matrix[row].indices for row in rows]
    noise = np.random.default_rng(6).random((200, 40)).astype(np.float32) * 0.01
    value_of = ndcg(heldout, exclude)
    chosen, value = fit_reranker(matrix, 10.0, noise, exclude, history_for, value_of, half_lives=(None, 5.0))
    _, alike = fit_reranker(matrix, 10.0, noise, exclude, history_for, value_of, half_lives=(None,))
    assert chosen.half_life == 5.0 and value > alike + 0.05


def test_model_dir_carries_the_reranker_and_versions_it(tmp_path: Path) -> None:
    users = pd.DataFrame({schema.USER_ID: ["u1", "u2"]})
    items = pd.DataFrame({schema.ITEM_ID: ["i1", "i2", "i3"]})
    positives = pd.DataFrame(
        {schema.USER_ID: ["u1", "u1", "u2"], schema.ITEM_ID: ["i1", "i2", "i3"], schema.TIMESTAMP: pd.Timestamp(0)}
    )
    space = fit_feature_space(users, items, positives)
    torch.manual_seed(0)
    towers = {"user_tower": UserTower(**space.user_tower_sizes()), "item_tower": ItemTower(**space.item_tower_sizes())}
    weights = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32))

    def save(out: Path, stage: rr.ItemItemReranker | None) -> str:
        config = {"user_tower": {}, "item_tower": {}}
        return artifacts.save_model(out, config=config, features=space, recent_items={}, reranker=stage, **towers)

    plain, reranked = save(tmp_path / "plain", None), save(tmp_path / "reranked", reranker(weights))
    assert plain != reranked  # the reranker is part of the model_version
    assert artifacts.load_model(tmp_path / "plain").reranker is None
    model = artifacts.load_model(tmp_path / "reranked")
    assert model.reranker is not None and model.reranker.config() == reranker(weights).config()
    assert model.item_positions(["i2", "nope", "i1"]).tolist() == [1, -1, 0]
    with pytest.raises(artifacts.ModelDirError, match="covers 2 items"):
        save(tmp_path / "bad", reranker(sp.csr_matrix((2, 2), dtype=np.float32)))
    rr.ItemItemReranker(weights * 2, 1.0, "ease", 5, 10.0).save(tmp_path / "reranked")  # tampered weights
    with pytest.raises(artifacts.ModelDirError, match="does not match"):
        artifacts.load_model(tmp_path / "reranked")
