"""Splits and weights (recsys.model.dataset), ranking metrics and baselines (recsys.model.evaluate), on hand-made
and small synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys import schema
from recsys.model import dataset as ds
from recsys.model import evaluate as ev
from recsys.model.baselines import EASE_LAMBDAS, fit_ease, fit_itemknn, fit_popularity

pytestmark = pytest.mark.unit


def clustered_interactions(n_users: int = 150, n_items: int = 200, per_user: int = 30, seed: int = 0) -> pd.DataFrame:
    """Users in 10 taste clusters, each mostly (90%) interacting with its own cluster's items, popular ones more."""
    rng = np.random.default_rng(seed)
    n_clusters = 10
    user_cluster = rng.integers(n_clusters, size=n_users)
    item_cluster = np.arange(n_items) % n_clusters
    popularity = rng.zipf(1.5, size=n_items).clip(max=50).astype(float)
    rows = []
    for user in range(n_users):
        own = item_cluster == user_cluster[user]
        weights = popularity * np.where(own, 9.0 * (~own).sum() / own.sum(), 1.0)
        items = rng.choice(n_items, size=per_user, replace=False, p=weights / weights.sum())
        rows += [(f"u{user}", f"i{item}") for item in items]
    frame = pd.DataFrame(rows, columns=[schema.USER_ID, schema.ITEM_ID])
    frame[schema.TIMESTAMP] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        rng.permutation(len(frame)), unit="min"
    )
    kinds = np.array([schema.POSITIVE_VIEW, schema.CART, schema.PURCHASE, schema.NEGATIVE_VIEW])
    frame[schema.INTERACTION_TYPE] = pd.array(rng.choice(kinds, size=len(frame), p=[0.6, 0.2, 0.1, 0.1]), "string")
    frame[schema.INTERACTION_ID] = [f"x{i}" for i in range(len(frame))]
    return frame


def write_minimal_dataset(directory: Path, interactions: pd.DataFrame) -> Path:
    """The three parquet files with only the required id/timestamp columns (plus interaction_type)."""
    users = pd.DataFrame({schema.USER_ID: sorted(interactions[schema.USER_ID].unique())})
    items = pd.DataFrame({schema.ITEM_ID: sorted(interactions[schema.ITEM_ID].unique())})
    users.to_parquet(directory / schema.USERS_FILE)
    items.to_parquet(directory / schema.ITEMS_FILE)
    interactions.to_parquet(directory / schema.INTERACTIONS_FILE)
    return directory


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_exact_values_on_hand_made_ranking() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    # user 0: item 0 excluded -> ranking 1, 3, 2; relevant {1}. user 1: ranking 3, 2, 1, 0; relevant {0, 2}.
    metrics = ev.rank_metrics(scores, [np.array([1]), np.array([0, 2])], [np.array([0]), np.array([], int)], ks=(1, 2))
    ndcg_user1_at2 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert metrics == pytest.approx(
        {
            "recall@1": 0.5,
            "ndcg@1": 0.5,
            "hit@1": 0.5,
            "mrr@1": 0.5,
            "recall@2": (1 + 0.5) / 2,
            "ndcg@2": (1 + ndcg_user1_at2) / 2,
            "hit@2": 1.0,
            "mrr@2": (1 + 0.5) / 2,
        }
    )


def test_excluded_training_items_never_take_a_slot() -> None:
    scores = np.array([[10.0, 9.0, 8.0, 1.0]])
    # without exclusion item 3 is last; excluding items 0-2 puts it first
    assert ev.rank_metrics(scores, [np.array([3])], [np.array([], int)], ks=(1,))["hit@1"] == 0.0
    assert ev.rank_metrics(scores, [np.array([3])], [np.array([0, 1, 2])], ks=(1,))["hit@1"] == 1.0


def test_users_without_heldout_items_are_not_averaged() -> None:
    scores = np.array([[1.0, 0.0], [1.0, 0.0]])
    metrics = ev.rank_metrics(scores, [np.array([0]), np.array([], int)], [np.array([], int)] * 2, ks=(1,))
    assert metrics["recall@1"] == 1.0


def test_metrics_reject_nan_and_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ev.rank_metrics(np.array([[np.nan, 1.0]]), [np.array([0])], [np.array([], int)])
    with pytest.raises(ValueError, match="one heldout"):
        ev.rank_metrics(np.ones((2, 3)), [np.array([0])], [np.array([], int)])


def test_rank_metrics_handles_1000_users_by_5000_items_quickly() -> None:
    import time

    rng = np.random.default_rng(1)
    scores = rng.random((1000, 5000), dtype=np.float32)
    heldout = [rng.choice(5000, 3, replace=False) for _ in range(1000)]
    exclude = [rng.choice(5000, 20, replace=False) for _ in range(1000)]
    heldout = [np.setdiff1d(h, e) for h, e in zip(heldout, exclude, strict=True)]
    started = time.perf_counter()
    metrics = ev.rank_metrics(scores, heldout, exclude)
    assert time.perf_counter() - started < 5.0
    assert metrics["recall@50"] == pytest.approx(50 / 4980, abs=0.01)  # random scores: recall ~ k / n_items


# ------------------------------------------------------------------------------------------ weights
def test_positive_mask_and_weights_follow_schema() -> None:
    frame = pd.DataFrame(
        {
            schema.INTERACTION_TYPE: pd.array(
                [schema.PURCHASE, schema.CART, schema.POSITIVE_VIEW, schema.NEGATIVE_VIEW, schema.RATE, schema.RATE],
                "string",
            ),
            schema.RATING: pd.array([None, None, None, None, 5.0, None], "Float64"),
        }
    )
    weights = ds.interaction_weights(frame)
    assert weights.tolist() == pytest.approx([3.0, 2.0, 1.0, 0.0, 5 * schema.RATE_WEIGHT_PER_STAR, 1.0])
    assert ds.positive_mask(frame).tolist() == [True, True, True, False, True, True]
    assert ds.positive_mask(frame.drop(columns=[schema.INTERACTION_TYPE])).all()


# ------------------------------------------------------------------------------------------ splits
def test_temporal_split_holds_out_each_users_latest_interactions() -> None:
    interactions = clustered_interactions()
    split = ds.make_split(interactions, "temporal")
    assert len(split.train) + len(split.valid) + len(split.test) == len(interactions)
    assert set(split.train[schema.INTERACTION_ID]).isdisjoint(split.test[schema.INTERACTION_ID])
    last_train = split.train.groupby(schema.USER_ID)[schema.TIMESTAMP].max()
    first_valid = split.valid.groupby(schema.USER_ID)[schema.TIMESTAMP].min()
    last_valid = split.valid.groupby(schema.USER_ID)[schema.TIMESTAMP].max()
    first_test = split.test.groupby(schema.USER_ID)[schema.TIMESTAMP].min()
    assert (first_valid > last_train.loc[first_valid.index]).all()
    assert (first_test > last_valid.loc[first_test.index]).all()
    assert split.test.groupby(schema.USER_ID).size().eq(3).all()  # 10% of 30


def test_random_split_is_80_10_10_per_user_seeded_and_without_leakage() -> None:
    interactions = clustered_interactions()
    split = ds.make_split(interactions, "random", seed=3)
    parts = [split.train, split.valid, split.test]
    ids = [set(p[schema.INTERACTION_ID]) for p in parts]
    assert sum(map(len, ids)) == len(interactions) == len(set().union(*ids))
    for part, share in zip(parts, (24, 3, 3), strict=True):
        assert part.groupby(schema.USER_ID).size().eq(share).all()
    again = ds.make_split(interactions, "random", seed=3)
    other = ds.make_split(interactions, "random", seed=4)
    assert set(again.test[schema.INTERACTION_ID]) == ids[2] != set(other.test[schema.INTERACTION_ID])
    # random, not temporal: some held-out interactions are older than some training ones of the same user
    assert (
        split.test.groupby(schema.USER_ID)[schema.TIMESTAMP].min()
        < split.train.groupby(schema.USER_ID)[schema.TIMESTAMP].max()
    ).any()


def test_users_with_few_interactions_stay_in_train() -> None:
    interactions = clustered_interactions(per_user=ds.MIN_INTERACTIONS_TO_HOLD_OUT - 1)
    split = ds.make_split(interactions, "temporal")
    assert len(split.train) == len(interactions) and split.valid.empty and split.test.empty


def test_unknown_split_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown split 'weekly'"):
        ds.make_split(clustered_interactions(n_users=5), "weekly")


def test_eval_set_drops_negatives_and_known_items_from_relevance() -> None:
    ts = pd.Timestamp("2024-01-01", tz="UTC")
    known = pd.DataFrame({schema.USER_ID: ["a"], schema.ITEM_ID: ["1"], schema.TIMESTAMP: [ts]})
    heldout = pd.DataFrame(
        {
            schema.USER_ID: ["a", "a", "a", "b"],
            schema.ITEM_ID: ["1", "2", "3", "3"],
            schema.TIMESTAMP: [ts] * 4,
            schema.INTERACTION_TYPE: [schema.PURCHASE, schema.NEGATIVE_VIEW, schema.CART, schema.NEGATIVE_VIEW],
        }
    )
    eval_set = ev.build_eval_set(known, heldout, pd.Index(["a", "b"]), pd.Index(["1", "2", "3"]))
    assert eval_set.user_rows.tolist() == [0]  # b has only a negative view: nothing relevant
    assert eval_set.heldout[0].tolist() == [2] and eval_set.exclude[0].tolist() == [0]


# ------------------------------------------------------------------------------------------ baselines
@pytest.fixture(scope="module")
def clustered_split() -> tuple[pd.Index, pd.Index, ds.Split]:
    interactions = clustered_interactions()
    users = pd.Index(sorted(interactions[schema.USER_ID].unique()))
    items = pd.Index(sorted(interactions[schema.ITEM_ID].unique()))
    return users, items, ds.make_split(interactions, "temporal")


def test_baselines_beat_random_scores(clustered_split: tuple[pd.Index, pd.Index, ds.Split]) -> None:
    users, items, split = clustered_split
    matrix = ds.interaction_matrix(split.train, users, items)
    test_set = ev.build_eval_set(pd.concat([split.train, split.valid]), split.test, users, items)
    rng = np.random.default_rng(0)
    random_recall = ev.score_eval_set(lambda rows: rng.random((len(rows), len(items))), test_set)["recall@10"]
    recalls = {
        name: ev.score_eval_set(fit(matrix), test_set)["recall@10"]
        for name, fit in (("popularity", fit_popularity), ("itemknn", fit_itemknn), ("ease", lambda m: fit_ease(m, 20)))
    }
    assert all(value > 1.5 * random_recall for value in recalls.values()), (recalls, random_recall)
    assert recalls["itemknn"] > recalls["popularity"] and recalls["ease"] > recalls["popularity"]


def test_ease_lambda_is_the_best_on_the_validation_part(clustered_split: tuple[pd.Index, pd.Index, ds.Split]) -> None:
    users, items, split = clustered_split
    matrix = ds.interaction_matrix(split.train, users, items)
    valid_set = ev.build_eval_set(split.train, split.valid, users, items)
    grid = (0.5, 20.0, 5000.0)
    chosen, _ = ev.choose_ease_lambda(matrix, valid_set, grid)
    valid_recall = {lam: ev.score_eval_set(fit_ease(matrix, lam), valid_set)["recall@10"] for lam in grid}
    assert valid_recall[chosen] == max(valid_recall.values())
    with pytest.raises(ValueError, match="lambda"):
        fit_ease(matrix, 0.0)


def test_ease_lambda_does_not_depend_on_the_weight_scale(clustered_split: tuple[pd.Index, pd.Index, ds.Split]) -> None:
    """All-purchase data (weight 3 each, as MovieLens imports) must be regularised like binary data."""
    users, items, split = clustered_split
    binary = (ds.interaction_matrix(split.train, users, items) > 0).astype(np.float32)
    rows = np.arange(len(users))
    assert np.allclose(fit_ease(3 * binary, 100.0)(rows), 3 * fit_ease(binary, 100.0)(rows), atol=1e-4)
    assert not np.allclose(fit_ease(binary, 100.0)(rows), fit_ease(binary, 5.0)(rows), atol=1e-4)


def test_report_on_minimal_parquet_files(tmp_path: Path) -> None:
    interactions = clustered_interactions()
    data_dir = write_minimal_dataset(tmp_path, interactions.drop(columns=[schema.INTERACTION_ID]))
    seen: dict[str, tuple[int, int]] = {}

    def user_scores(users: pd.DataFrame, items: pd.DataFrame, train: pd.DataFrame) -> np.ndarray:
        seen["shape"] = (len(users), len(items))
        assert len(train) < len(interactions)
        return np.random.default_rng(0).random((len(users), len(items)))

    report = ev.evaluate_model_and_baselines(data_dir, None, "random", k_values=(10, 20), user_scores=user_scores)
    assert report["split"] == "random"
    assert set(report["baselines"]) == {"popularity", "itemknn", "ease"}
    assert set(report["model"]) == {f"{m}@{k}" for m in ("recall", "ndcg", "hit", "mrr") for k in (10, 20)}
    assert seen["shape"] == (report["details"]["users_evaluated"], 200)
    assert report["details"]["ease_lambda"] in EASE_LAMBDAS
    assert report["baselines"]["ease"]["recall@10"] > report["model"]["recall@10"]  # random model scores
    assert "model" not in ev.evaluate_model_and_baselines(data_dir, None, "temporal")


def test_report_rejects_files_without_required_columns(tmp_path: Path) -> None:
    data_dir = write_minimal_dataset(tmp_path, clustered_interactions(n_users=10))
    pd.read_parquet(data_dir / schema.INTERACTIONS_FILE).drop(columns=[schema.TIMESTAMP]).to_parquet(
        data_dir / schema.INTERACTIONS_FILE
    )
    with pytest.raises(ValueError, match="interactions lack required column"):
        ev.evaluate_model_and_baselines(data_dir, None, "temporal")


def test_evaluate_command_prints_table_and_writes_json(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from recsys.cli import app

    data_dir = write_minimal_dataset(tmp_path, clustered_interactions())
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--data", str(data_dir), "--baselines-only", "--k", "10", "--out", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "recall@10" in result.output and "ease" in result.output
    written = json.loads(out.read_text())
    assert written["split"] == "temporal" and set(written["baselines"]["ease"]) == {
        "recall@10",
        "ndcg@10",
        "hit@10",
        "mrr@10",
    }
    bad = CliRunner().invoke(app, ["evaluate", "--data", str(data_dir), "--baselines-only", "--split", "weekly"])
    assert bad.exit_code == 2 and "unknown split 'weekly'" in bad.output
