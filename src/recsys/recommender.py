"""The request side of recommendations: request -> Feast user features -> user vector -> candidates -> filters
-> top k.

Used by the KServe predictor (serving/) and by `recsys recommend`, over a `ServingState`
(recsys.serving_state), which owns the pool, the Feast store and the version being served. Each call works on
one `ServedVersion` snapshot, so an answer never mixes two versions.

Per request batch: ONE Feast get_online_features call (user_features + user_embedding for every user_id), ONE
SQL read of the users' history, one tower forward for the users that need it, one retrieval round (widened by
retrieval.widen_until_k for requests whose filters leave fewer than k), numpy filters.

When the model carries an item-item reranker (recsys.model.rerank), a user with history (training history +
purchased, carted, viewed and pending items, so events count at once) gets a pool wide enough that about
contract.RERANK_CANDIDATES candidates survive the filters; the best RERANK_CANDIDATES survivors are re-scored
(boosted cosine + the normalised item-item votes of the history) and re-sorted, and that blended score is the
`score` answered. Users without history, and models without a reranker, keep the two-tower order and cosine.

Users with events newer than the published vectors (history `pending`, see recsys.events) skip their stored
vector: the tower re-embeds them from training history + those events, and the mean item vector of the events
is added (weight ServingSettings.event_weight; one more SQL read), because the tower pools up to 20 items
equally and a handful of new ones would barely move it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from recsys import history, schema
from recsys.contract import RERANK_CANDIDATES
from recsys.filters import NO_ROWS, FilterResult, UserFacts, parse_preferences
from recsys.request_models import RecommendRequest
from recsys.response_models import Recommendation, Source
from recsys.retrieval import widen_until_k
from recsys.serving_state import USER_FEATURE_REFS, USER_FEATURES, ServedVersion, ServingState
from recsys.vector_index.queries import read_vectors

# where a request's user vector came from
SOURCE_STORED: Source = "stored_embedding"
SOURCE_TOWER: Source = "user_tower"
SOURCE_POPULARITY: Source = "popularity"
# the history kinds that feed the reranker, next to the training history and pending events
RERANK_HISTORY_KINDS = ("purchased", "carted", "viewed")


@dataclass
class _Job:
    request: RecommendRequest
    facts: UserFacts
    source: Source
    cold_start: bool
    vector: np.ndarray | None = None
    pending: tuple[str, ...] = ()  # items of events since the publish (they steer the tower's vector)
    rerank_history: np.ndarray | None = None  # model positions of the user's items; None: two-tower order


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


class Recommender:
    """Top-k recommendations over the version a ServingState serves (thread-safe, like the state)."""

    def __init__(self, state: ServingState):
        self.state = state

    def recommend(self, requests: Sequence[RecommendRequest]) -> list[Recommendation]:
        """Top-k per request, in order. Raises NotReady (no consistent version / database down)."""
        version = self.state.current()
        with self.state.answering():
            return self._recommend(version, requests)

    def user_vectors(self, version: ServedVersion, requests: Sequence[RecommendRequest]) -> list[np.ndarray | None]:
        """Each request's user vector exactly as `recommend` finds it; None where it would fall back to popularity."""
        return [job.vector for job in self._plan(version, requests)]

    def _read_users(self, user_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, history.UserHistory]]:
        if not user_ids:
            return {}, {}
        rows = [{schema.USER_ID: u} for u in user_ids]
        table = self.state.store.get_online_features(features=USER_FEATURE_REFS, entity_rows=rows).to_dict()
        names = [*USER_FEATURES, schema.USER_VECTOR, schema.MODEL_VERSION]
        features = {u: {name: table[name][i] for name in names} for i, u in enumerate(user_ids)}
        with self.state.connection() as conn:
            histories = history.read_user_history(conn, user_ids)
        return features, histories

    def _plan(self, version: ServedVersion, requests: Sequence[RecommendRequest]) -> list[_Job]:
        user_ids = list(dict.fromkeys(r.user_id for r in requests if r.user_id is not None))
        features, histories = self._read_users(user_ids)
        exclude = version.filters.config.history.exclude
        jobs, tower_rows, tower_jobs = [], [], []
        tower_history: dict[str, list[str]] = {}  # user tower input: training history + events since publish
        for request in requests:
            found = features.get(request.user_id, {}) if request.user_id else {}
            profile = request.user
            age, gender, prefs = (None if _missing(found.get(n)) else found.get(n) for n in USER_FEATURES)
            if profile is not None:
                age = profile.age if age is None else age
                gender = profile.gender if gender is None else gender
                prefs = profile.preferences if prefs is None else prefs
            past = histories.get(request.user_id) if request.user_id else None
            facts = UserFacts(
                age=None if age is None else int(age),
                gender=gender,
                preferences=parse_preferences(prefs),
                excluded_items=version.catalogue.positions(past.items(exclude)) if past else NO_ROWS,
            )
            vector = found.get(schema.USER_VECTOR)
            # events newer than the published vector (history.pending) bypass it: the tower re-embeds the user
            pending = list(past.pending) if past else []
            known = request.user_id is not None and (request.user_id in version.model.recent_items or bool(pending))
            if not pending and not _missing(vector) and found.get(schema.MODEL_VERSION) == version.model_version:
                jobs.append(
                    _Job(request, facts, SOURCE_STORED, cold_start=False, vector=np.asarray(vector, dtype=np.float32))
                )
            elif known or age is not None or gender is not None or prefs is not None:
                job = _Job(request, facts, SOURCE_TOWER, cold_start=not known, pending=tuple(pending))
                jobs.append(job)
                tower_jobs.append(job)
                tower_rows.append(
                    {schema.USER_ID: request.user_id, schema.AGE: age, schema.GENDER: gender, schema.PREFERENCES: prefs}
                )
                if request.user_id is not None:
                    tower_history[request.user_id] = [*version.model.recent_items.get(request.user_id, []), *pending]
            else:
                jobs.append(_Job(request, facts, SOURCE_POPULARITY, cold_start=True))
            reranked = version.model.reranker is not None and jobs[-1].source != SOURCE_POPULARITY
            if reranked and request.user_id is not None:
                jobs[-1].rerank_history = _rerank_history(version, request.user_id, past)
        if tower_rows:
            vectors = version.model.encode_users(pd.DataFrame(tower_rows), history=tower_history)
            for job, vector in zip(tower_jobs, vectors, strict=True):
                job.vector = vector
            self._steer_by_events(version, [job for job in tower_jobs if job.pending])
        return jobs

    def _steer_by_events(self, version: ServedVersion, jobs: list[_Job]) -> None:
        """vector <- unit(vector + event_weight * mean item vector of the job's pending items)."""
        weight = self.state.serving.event_weight
        if not jobs or weight == 0:
            return
        wanted = list(dict.fromkeys(item for job in jobs for item in job.pending))
        with self.state.connection() as conn:
            vectors = read_vectors(conn, wanted, version.model_version)
        for job in jobs:
            found = [vectors[item] for item in job.pending if item in vectors]
            if found and job.vector is not None:
                steered = job.vector + weight * np.mean(found, axis=0)
                job.vector = (steered / max(float(np.linalg.norm(steered)), 1e-12)).astype(np.float32)

    def _recommend(self, version: ServedVersion, requests: Sequence[RecommendRequest]) -> list[Recommendation]:
        jobs = self._plan(version, requests)
        with_vector = [j for j in jobs if j.vector is not None]
        results: dict[int, FilterResult] = {}
        if with_vector:
            first = self.state.serving.first_pool(max(j.request.k for j in with_vector))
            reranked = [j for j in with_vector if j.rerank_history is not None]
            if reranked:  # room for the items the history filter will hide
                first = max(first, *(RERANK_CANDIDATES + len(j.facts.excluded_items) for j in reranked))
            hits = version.retriever.search(np.stack([j.vector for j in with_vector]), first)
            for job, hit in zip(with_vector, hits, strict=True):
                select = partial(_filter if job.rerank_history is None else _rerank_and_filter, version, job)
                results[id(job)] = widen_until_k(version.retriever, job.vector, first, job.request.k, select, hit)
        for job in jobs:
            if job.vector is None:
                results[id(job)] = _filter(version, job, version.popular_rows, version.popular_scores)
        return [_response(version, job, results[id(job)]) for job in jobs]


def _filter(version: ServedVersion, job: _Job, rows: np.ndarray, scores: np.ndarray) -> FilterResult:
    context = job.request.context
    return version.filters.apply(rows, scores, job.facts, context.moment(), context.device, context.season)


def _rerank_and_filter(version: ServedVersion, job: _Job, rows: np.ndarray, scores: np.ndarray) -> FilterResult:
    """The filters, then the reranker over the best RERANK_CANDIDATES survivors, re-sorted by blended score.

    Survivors, not the raw pool: the reranker scales the item-item votes by their largest value among its
    candidates, and the user's purchased items (hidden by the history filter) would set that scale. The blend
    adds to the (boosted) cosine, so a contextual boost carries over unchanged."""
    result = _filter(version, job, rows, scores)
    keep = max(RERANK_CANDIDATES, job.request.k)
    rows, scores = result.rows[:keep], result.scores[:keep]
    blended = version.model.reranker.score(version.rerank_positions[rows], scores, job.rerank_history)
    order = np.argsort(-blended, kind="stable")
    return FilterResult(rows=rows[order], scores=blended[order], removed=result.removed)


def _rerank_history(version: ServedVersion, user_id: str, past: history.UserHistory | None) -> np.ndarray | None:
    """Model positions of the user's items: training history, purchased/carted/viewed and pending events (the
    events feed the rerank at once). None when the model knows none of them: the user keeps the two-tower order."""
    recent = version.model.recent_items.get(user_id, [])
    # oldest first, as the reranker's recency weighting reads it; it keeps an item's newest occurrence. The
    # history table's arrays are in id order, not time order: all but the pending items are at least as old as
    # the training history's tail, so they go first and the training tail and pending events keep their order.
    items = recent if past is None else [*past.items(RERANK_HISTORY_KINDS), *recent, *past.pending]
    positions = version.model.item_positions(items)
    positions = positions[positions >= 0]
    return positions if len(positions) else None


def _response(version: ServedVersion, job: _Job, result: FilterResult) -> Recommendation:
    k = job.request.k
    return Recommendation(
        user_id=job.request.user_id,
        model_version=version.model_version,
        cold_start=job.cold_start,
        source=job.source,
        items=version.catalogue.describe(result.rows[:k], result.scores[:k]),
        filtered=result.removed,
    )
