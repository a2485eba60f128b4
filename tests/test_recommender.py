"""The online path in-process: a tiny trained model published into the session Postgres and Feast."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serving_setup import copy_feature_repo, settings_restored, setup_published

from recsys import history, schema
from recsys.recommender import SOURCE_POPULARITY, SOURCE_STORED, SOURCE_TOWER, Recommender
from recsys.request_models import RecommendRequest, RequestContext, UserProfile
from recsys.serving_state import ServingSettings, ServingState

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Published:
    repo: Path
    model_dir: Path
    version: str
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame


@pytest.fixture(scope="module")
def published(pg_dsn: str, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("online")
    repo = copy_feature_repo(root / "feature_repo", tiny_data)
    with settings_restored():
        version = setup_published(tiny_data, repo, root / "model", seed=101)
        yield Published(
            repo=repo,
            model_dir=root / "model",
            version=version,
            users=pd.read_parquet(tiny_data / schema.USERS_FILE),
            items=pd.read_parquet(tiny_data / schema.ITEMS_FILE).set_index(schema.ITEM_ID),
            interactions=pd.read_parquet(tiny_data / schema.INTERACTIONS_FILE),
        )


@pytest.fixture(scope="module")
def recommender(published: Published) -> Iterator[Recommender]:
    state = ServingState.from_settings(published.model_dir, poll=False)
    assert state.ready(), "the serving state did not load the published version"
    yield Recommender(state)
    state.close()


def now() -> RequestContext:
    return RequestContext(timestamp=datetime.now(UTC))


def purchased(published: Published, user_id: str) -> set[str]:
    rows = published.interactions[published.interactions[schema.USER_ID] == user_id]
    return set(rows.loc[rows[schema.INTERACTION_TYPE].isin([schema.PURCHASE, schema.RATE]), schema.ITEM_ID])


def test_serves_the_published_version(recommender: Recommender, published: Published) -> None:
    assert recommender.state.model_version == published.version
    assert recommender.state.refresh_version() == published.version  # unchanged: no reload


def test_known_user_gets_k_items_from_the_stored_embedding(recommender: Recommender, published: Published) -> None:
    user_id = published.users[schema.USER_ID].iloc[0]
    [answer] = recommender.recommend([RecommendRequest(user_id=user_id, k=7, context=now())])
    assert answer[schema.USER_ID] == user_id
    assert answer[schema.MODEL_VERSION] == published.version
    assert answer["source"] == SOURCE_STORED and answer["cold_start"] is False
    assert len(answer["items"]) == 7
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    first = answer["items"][0]
    expected = published.items.loc[first[schema.ITEM_ID]]
    assert first[schema.PRODUCT_NAME] == expected[schema.PRODUCT_NAME]
    assert first[schema.CATEGORY] == expected[schema.CATEGORY]
    assert first[schema.IMG_LINK] == expected[schema.IMG_LINK]
    assert set(answer["filtered"]) == {"availability", "demographic", "history", "contextual"}


def test_filters_hold_on_real_answers(recommender: Recommender, published: Published) -> None:
    """No out-of-stock, not-yet-arrived or purchased item for any user, and the counts add up."""
    users = published.users[schema.USER_ID].tolist()[:60]
    moment = datetime.now(UTC)
    answers = recommender.recommend([RecommendRequest(user_id=u, k=20, context=RequestContext(timestamp=moment))
                                     for u in users])  # fmt: skip
    removed_total = 0
    for user_id, answer in zip(users, answers, strict=True):
        ids = [item[schema.ITEM_ID] for item in answer["items"]]
        assert len(ids) == 20 and len(set(ids)) == 20
        shown = published.items.loc[ids]
        assert (shown[schema.STOCK_QUANTITY] > 0).all()
        assert (shown[schema.ARRIVAL_DATE] <= pd.Timestamp(moment)).all()
        assert not set(ids) & purchased(published, user_id)
        removed_total += sum(answer["filtered"].values())
    assert removed_total > 0  # the tiny catalogue has out-of-stock, future and purchased items to remove


def test_demographic_rules_on_real_answers(recommender: Recommender) -> None:
    young = RecommendRequest(user=UserProfile(age=15, gender="F", preferences="Knife Sets|Frying Pans"), k=100,
                             context=now())  # fmt: skip
    [answer] = recommender.recommend([young])
    categories = [item[schema.CATEGORY] for item in answer["items"]]
    assert not any("Knife Sets" in c for c in categories)
    assert not any(c.split("|")[1] == "Men" or "Colognes" in c for c in categories)
    assert answer["filtered"]["demographic"] > 0


def test_profile_cold_start_uses_the_user_tower(recommender: Recommender) -> None:
    request = RecommendRequest(user=UserProfile(preferences="Laptops|Monitors", age=30, gender="M"), k=10,
                               context=now())  # fmt: skip
    [answer] = recommender.recommend([request])
    assert answer["cold_start"] is True and answer["source"] == SOURCE_TOWER
    assert answer[schema.USER_ID] is None and len(answer["items"]) == 10


def test_unknown_user_without_profile_gets_popular_available_items(
    recommender: Recommender, published: Published
) -> None:
    moment = datetime.now(UTC)
    [answer] = recommender.recommend([RecommendRequest(user_id="nobody-knows-me", k=10,
                                                       context=RequestContext(timestamp=moment))])  # fmt: skip
    assert answer["cold_start"] is True and answer["source"] == SOURCE_POPULARITY
    ids = [item[schema.ITEM_ID] for item in answer["items"]]
    assert len(ids) == 10
    shown = published.items.loc[ids]
    assert (shown[schema.STOCK_QUANTITY] > 0).all() and (shown[schema.ARRIVAL_DATE] <= pd.Timestamp(moment)).all()
    counts = published.interactions[schema.ITEM_ID].value_counts()
    assert counts.reindex(ids).fillna(0).mean() > counts.mean()  # more popular than the average item


def test_unknown_user_with_profile_is_cold_start_through_the_tower(recommender: Recommender) -> None:
    request = RecommendRequest(user_id="brand-new", user=UserProfile(preferences="Board Games"), k=5, context=now())
    [answer] = recommender.recommend([request])
    assert answer["cold_start"] is True and answer["source"] == SOURCE_TOWER and len(answer["items"]) == 5


def test_widening_returns_k_when_filters_remove_most(recommender: Recommender, published: Published) -> None:
    """k = 100 of 400 items with a first pool of 4k: enough survive only after widening when needed."""
    user_id = published.users[schema.USER_ID].iloc[1]
    [answer] = recommender.recommend([RecommendRequest(user_id=user_id, k=100, context=now())])
    assert len(answer["items"]) == 100


def test_stale_stored_embedding_falls_back_to_the_tower(recommender: Recommender, published: Published) -> None:
    """A stored user vector of another model_version is never mixed with this version's items."""
    state = recommender.state.current()
    user_id = published.users[schema.USER_ID].iloc[2]
    object.__setattr__(state, "model_version", "some-other-version")
    try:
        [answer] = recommender.recommend([RecommendRequest(user_id=user_id, k=5, context=now())])
    finally:
        object.__setattr__(state, "model_version", published.version)
    assert answer["source"] == SOURCE_TOWER and answer["cold_start"] is False


def test_hnsw_strategy_agrees_with_exact(recommender: Recommender, published: Published) -> None:
    hnsw_state = ServingState.from_settings(published.model_dir, poll=False, serving=ServingSettings(retrieval="hnsw"))
    hnsw = Recommender(hnsw_state)
    try:
        users = published.users[schema.USER_ID].tolist()[:20]
        moment = RequestContext(timestamp=datetime.now(UTC))
        requests = [RecommendRequest(user_id=u, k=10, context=moment) for u in users]
        exact_ids = [[i[schema.ITEM_ID] for i in a["items"]] for a in recommender.recommend(requests)]
        hnsw_ids = [[i[schema.ITEM_ID] for i in a["items"]] for a in hnsw.recommend(requests)]
    finally:
        hnsw_state.close()
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, hnsw_ids, strict=True)])
    assert overlap >= 0.9


def test_history_table_is_idempotent_and_keeps_newer_rows(pg_dsn: str, published: Published) -> None:
    from recsys import db

    table = "recsys_user_history_test"
    frame = published.interactions
    with db.connect() as conn:
        assert history.write_user_history(conn, frame, table) == frame[schema.USER_ID].nunique()
        first = history.read_user_history(conn, frame[schema.USER_ID].unique(), table)
        history.write_user_history(conn, frame, table)
        assert history.read_user_history(conn, frame[schema.USER_ID].unique(), table) == first
        user_id = frame[schema.USER_ID].iloc[0]
        stale = frame[frame[schema.USER_ID] == user_id].assign(**{schema.TIMESTAMP: pd.Timestamp("2000-01-01", tz="UTC"),
                                                                 schema.ITEM_ID: "old-item"})  # fmt: skip
        history.write_user_history(conn, stale, table)
        assert history.read_user_history(conn, [user_id], table)[user_id] == first[user_id]
        # a replacing write (what publish does) makes the table exactly the snapshot, older or not
        history.write_user_history(conn, stale, table, replace=True)
        assert history.read_user_history(conn, frame[schema.USER_ID].unique(), table) == {
            user_id: history.UserHistory(*[("old-item",) if first[user_id].items([kind]) else ()
                                           for kind in ("purchased", "carted", "viewed")])
        }  # fmt: skip
        conn.execute(f"DROP TABLE {table}")


def test_not_ready_without_a_matching_model(published: Published, tmp_path: Path) -> None:
    """A model dir holding another version than the live one is never served."""
    other = tmp_path / "model"
    shutil.copytree(published.model_dir, other)
    (other / "model_version").write_text("0000000000000000\n")
    state = ServingState.from_settings(other, poll=False)
    try:
        assert not state.ready()
    finally:
        state.close()
