"""The item-item rerank stage served by the KServe predictor (a real process) over the session Postgres and Feast.

The served top k of a known user must be exactly the offline reranking of the same model: the two-tower pool
retrieved over the published item vectors, re-scored by the model's ItemItemReranker with the user's history,
then the serving filters. A purchase logged through /v1/events feeds that rerank at once; a model dir written
before the reranker existed still serves the plain two-tower ranking.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_setup import (
    apply_and_materialize,
    copy_feature_repo,
    predictor,
    publish_model,
    settings_restored,
    train_model,
    use_settings,
)

from recsys import db, schema
from recsys.contract import EVENTS_PATH, PREDICT_PATH, RERANK_CANDIDATES
from recsys.feature_store import get_store
from recsys.filters import CompiledFilters, FilterConfig, FilterResult, UserFacts, parse_preferences
from recsys.history import UserHistory, read_user_history
from recsys.item_catalogue import ItemCatalogue
from recsys.model.artifacts import TrainedModel, load_model, save_model
from recsys.model.rerank import ItemItemReranker
from recsys.retrieval import ExactRetriever, widen_until_k
from recsys.serving_state import ServingSettings
from recsys.vector_index.queries import load_vectors

pytestmark = pytest.mark.e2e

K = 10
SERVED_BLEND_WEIGHT = 0.5
CONTEXT = {"timestamp": "2030-01-01T12:00:00Z"}  # fixed: every generated item has arrived by then
MOMENT = datetime.fromisoformat(CONTEXT["timestamp"])
POSITIVE = (schema.PURCHASE, schema.RATE, schema.CART, schema.POSITIVE_VIEW)
OWNED = (schema.PURCHASE, schema.RATE)  # what the default history filter hides


@dataclass(frozen=True)
class Setup:
    repo: Path
    models: Path  # models/<version>/: the predictor serves whichever version is live
    version: str  # with a reranker
    plain_version: str  # the same towers, written without a reranker (an artifact older than it)
    users: pd.DataFrame  # indexed by user_id
    items: pd.DataFrame


def rewritten(model: TrainedModel, out_dir: Path, reranker: ItemItemReranker | None) -> str:
    """The model's towers and mappings saved again with this reranker (None: a model dir as written before the
    reranker existed); returns the new model_version."""
    return save_model(
        out_dir,
        config=model.config,
        features=model.features,
        user_tower=model.user_tower,
        item_tower=model.item_tower,
        recent_items=model.recent_items,
        reranker=reranker,
    )


@pytest.fixture(scope="module")
def setup(pg_dsn: str, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("rerank")
    repo = copy_feature_repo(root / "feature_repo", tiny_data)
    models = root / "models"
    with settings_restored():
        use_settings(repo)
        train_model(tiny_data, root / "trained", seed=401)
        apply_and_materialize(repo)
        trained = load_model(root / "trained")
        assert trained.reranker is not None, "train() wrote no reranker"
        # a blend weight that surely reorders (validation may pick a small one on the tiny data)
        version = rewritten(trained, models / "reranked", replace(trained.reranker, weight=SERVED_BLEND_WEIGHT))
        (models / "reranked").rename(models / version)
        plain_version = rewritten(trained, models / "plain", None)
        (models / "plain").rename(models / plain_version)
        publish_model(models / version, repo)
        yield Setup(
            repo=repo,
            models=models,
            version=version,
            plain_version=plain_version,
            users=pd.read_parquet(tiny_data / schema.USERS_FILE).set_index(schema.USER_ID),
            items=pd.read_parquet(tiny_data / schema.ITEMS_FILE),
        )


@pytest.fixture(scope="module")
def server(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with predictor(setup.models, tmp_path_factory.mktemp("rerank-log") / "predictor.log") as url:
        yield url


def served(url: str, user_id: str | None, profile: dict | None = None) -> dict:
    who = {"user_id": user_id} if profile is None else {"user": profile}
    body = {"instances": [{**who, "k": K, "context": CONTEXT}]}
    response = httpx.post(url + PREDICT_PATH, json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def ids(prediction: dict) -> list[str]:
    return [item[schema.ITEM_ID] for item in prediction["items"]]


class Offline:
    """The ranking computed outside the predictor: the model dir, the published vectors and the users' history."""

    def __init__(self, setup: Setup, version: str):
        self.setup = setup
        self.version = version
        self.model = load_model(setup.models / version)
        with db.connect() as conn:
            item_ids, matrix = load_vectors(conn, version, schema.ITEM_VECTOR_TABLE)
        self.item_ids = [str(i) for i in item_ids]
        self.matrix = matrix
        self.retriever = ExactRetriever(matrix)
        frame = setup.items.set_index(schema.ITEM_ID).loc[self.item_ids].reset_index()
        self.catalogue = ItemCatalogue.from_frame(frame)
        self.filters = CompiledFilters(FilterConfig(), self.catalogue)

    def history(self, user_id: str) -> UserHistory:
        with db.connect() as conn:
            return read_user_history(conn, [user_id]).get(user_id, UserHistory())

    def stored_vector(self, user_id: str) -> np.ndarray | None:
        """The user vector publish stored for this version (None if it is another version's)."""
        refs = [f"{schema.VIEW_USER_EMBEDDING}:{name}" for name in (schema.USER_VECTOR, schema.MODEL_VERSION)]
        row = get_store(self.setup.repo).get_online_features(features=refs, entity_rows=[{schema.USER_ID: user_id}])
        found = row.to_dict()
        if found[schema.MODEL_VERSION][0] != self.version:
            return None
        return np.asarray(found[schema.USER_VECTOR][0], dtype=np.float32)

    def tower_vector(self, user_id: str, pending: list[str]) -> np.ndarray:
        """The vector of a user with events since the publish: the tower over the training history plus the
        events' items, moved towards their mean item vector (ServingSettings.event_weight)."""
        user = self.setup.users.loc[user_id]
        row = {
            schema.USER_ID: user_id,
            **{name: user[name] for name in (schema.AGE, schema.GENDER, schema.PREFERENCES)},
        }
        history = {user_id: [*self.model.recent_items.get(user_id, []), *pending]}
        vector = self.model.encode_users(pd.DataFrame([row]), history=history)[0]
        mean = self.matrix[[self.item_ids.index(item) for item in pending]].mean(axis=0)
        steered = vector + ServingSettings().event_weight * mean
        return (steered / np.linalg.norm(steered)).astype(np.float32)

    def ranking(
        self,
        user_id: str | None,
        vector: np.ndarray,
        bought: tuple[str, ...] = (),
        rerank_bought: bool = True,
        profile: dict | None = None,
    ) -> list[tuple[str, float]]:
        """Top K (item, score): the two-tower pool through the default filters (widened like the predictor
        widens), then, when the model has a reranker, its best RERANK_CANDIDATES survivors re-scored with the
        user's history as Postgres holds it plus `bought` (unless rerank_bought is off)."""
        past = UserHistory() if user_id is None else self.history(user_id)
        user = profile if user_id is None else self.setup.users.loc[user_id]
        facts = UserFacts(
            age=int(user[schema.AGE]),
            gender=user[schema.GENDER],
            preferences=parse_preferences(user[schema.PREFERENCES]),
            excluded_items=self.catalogue.positions([*past.purchased, *bought]),
        )
        # oldest first: the id-ordered history arrays, then the training tail, then events (newest last)
        items = [*past.purchased, *past.carted, *past.viewed, *self.model.recent_items.get(user_id or "", []),
                 *past.pending, *(bought if rerank_bought else ())]  # fmt: skip
        reranker, history = self.model.reranker, self.model.item_positions(items)

        def select(rows: np.ndarray, scores: np.ndarray) -> FilterResult:
            result = self.filters.apply(rows, scores, facts, MOMENT)
            if reranker is None:
                return result
            rows, scores = result.rows[:RERANK_CANDIDATES], result.scores[:RERANK_CANDIDATES]
            blended = reranker.score(self.model.item_positions([self.item_ids[r] for r in rows]), scores, history)
            order = np.argsort(-blended, kind="stable")
            return FilterResult(rows[order], blended[order], result.removed)

        pool = ServingSettings().first_pool(K)
        if reranker is not None:  # about RERANK_CANDIDATES survive the history filter
            pool = max(pool, RERANK_CANDIDATES + len(facts.excluded_items))
        result = widen_until_k(self.retriever, vector, pool, K, select)
        return [
            (self.item_ids[row], float(score)) for row, score in zip(result.rows[:K], result.scores[:K], strict=True)
        ]

    def plain(self, user_id: str | None, vector: np.ndarray, profile: dict | None = None) -> list[tuple[str, float]]:
        """The two-tower top K without the reranker, filtered the same way."""
        reranker, self.model.reranker = self.model.reranker, None
        try:
            return self.ranking(user_id, vector, profile=profile)
        finally:
            self.model.reranker = reranker


def ranked(prediction: dict) -> list[tuple[str, float]]:
    return [(item[schema.ITEM_ID], item["score"]) for item in prediction["items"]]


def same_ranking(answer: dict, expected: list[tuple[str, float]]) -> bool:
    """Same items in the same order, scores equal up to the response's rounding."""
    got = ranked(answer)
    return [i for i, _ in got] == [i for i, _ in expected] and all(
        abs(a - b) < 1e-5 for (_, a), (_, b) in zip(got, expected, strict=True)
    )


@pytest.fixture(scope="module")
def offline(setup: Setup) -> Offline:
    return Offline(setup, setup.version)


@pytest.fixture(scope="module")
def reranked_user(offline: Offline) -> str:
    """A known user served from the stored vector whose reranked top K differs from the plain two-tower top K
    (so the tests can tell them apart)."""
    for user_id in offline.setup.users.index[:50]:
        vector = offline.stored_vector(user_id)
        if vector is None or offline.history(user_id).pending:
            continue
        if [i for i, _ in offline.ranking(user_id, vector)] != [i for i, _ in offline.plain(user_id, vector)]:
            return str(user_id)
    raise AssertionError("the reranker changed no user's top K: the test cannot tell reranked from plain answers")


def test_served_ranking_is_the_offline_reranking_of_the_same_model(
    server: str, setup: Setup, offline: Offline, reranked_user: str
) -> None:
    assert offline.model.reranker is not None
    answer = served(server, reranked_user)
    assert answer[schema.MODEL_VERSION] == setup.version and answer["source"] == "stored_embedding"
    vector = offline.stored_vector(reranked_user)
    assert vector is not None
    expected = offline.ranking(reranked_user, vector)
    assert same_ranking(answer, expected), (ranked(answer), expected)
    assert ids(answer) != [i for i, _ in offline.plain(reranked_user, vector)]


def test_a_new_profile_keeps_the_two_tower_order(server: str, setup: Setup, offline: Offline) -> None:
    """No history, nothing to rerank with: the profile's tower vector ranks alone (and the cosine is the score)."""
    known = setup.users.iloc[0]
    profile = {"preferences": known[schema.PREFERENCES], "age": 40, "gender": known[schema.GENDER]}
    answer = served(server, None, profile)
    assert answer["source"] == "user_tower" and answer["cold_start"] is True
    vector = offline.model.encode_users(pd.DataFrame([{schema.USER_ID: None, **profile}]))[0]
    expected = offline.plain(None, vector, profile)
    assert same_ranking(answer, expected), (ranked(answer), expected)


def test_a_purchase_event_feeds_the_rerank_at_once(
    server: str, setup: Setup, offline: Offline, reranked_user: str
) -> None:
    """The purchased item joins the rerank history in the very next answer: the answer equals the offline rerank
    with it, and differs from the rerank of the same (event-steered) vector without it."""
    before = ids(served(server, reranked_user))
    past = offline.history(reranked_user)
    seen = {*past.purchased, *past.carted, *past.viewed, *offline.model.recent_items.get(reranked_user, [])}
    chosen = None
    for item in offline.item_ids:  # an item whose item-item links reorder this user's list
        if item in seen:
            continue
        vector = offline.tower_vector(reranked_user, [item])
        with_item = offline.ranking(reranked_user, vector, bought=(item,))
        without = offline.ranking(reranked_user, vector, bought=(item,), rerank_bought=False)
        if [i for i, _ in with_item] not in ([i for i, _ in without], before):
            chosen = item, with_item
            break
    assert chosen is not None, "no item's links change this user's reranked list"
    item, expected = chosen
    event = {"event_id": "rerank-1", "user_id": reranked_user, "item_id": item, "interaction_type": schema.PURCHASE}
    logged = httpx.post(server + EVENTS_PATH, json={"events": [event]}, timeout=30)
    assert logged.json() == {"accepted": 1, "duplicates": 0}

    answer = served(server, reranked_user)
    assert answer["source"] == "user_tower" and item not in ids(answer)
    assert same_ranking(answer, expected), (ranked(answer), expected)
    assert offline.history(reranked_user).pending == (item,)  # the offline rerank above is the served one
    assert ids(answer) != before


def test_a_model_without_reranker_still_serves_the_two_tower_ranking(server: str, setup: Setup) -> None:
    assert load_model(setup.models / setup.plain_version).reranker is None
    publish_model(setup.models / setup.plain_version, setup.repo)
    probe = str(setup.users.index[0])
    deadline = time.monotonic() + 30
    while served(server, probe)[schema.MODEL_VERSION] != setup.plain_version:
        assert time.monotonic() < deadline, "the predictor did not switch to the model without reranker"
        time.sleep(0.2)
    plain = Offline(setup, setup.plain_version)
    checked = 0
    for user_id in setup.users.index[:20]:
        vector = plain.stored_vector(user_id)
        if vector is None or plain.history(user_id).pending:
            continue
        answer = served(server, user_id)
        assert answer["source"] == "stored_embedding"
        expected = plain.ranking(user_id, vector)
        assert same_ranking(answer, expected), (user_id, ranked(answer), expected)
        checked += 1
    assert checked >= 10
