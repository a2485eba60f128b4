"""The request side of recommendations: request -> Feast user features -> user vector -> candidates -> filters
-> top k.

Used by the KServe predictor (serving/) and by `recsys recommend`, over a `ServingState`
(recsys.serving_state), which owns the pool, the Feast store and the version being served. Each call works on
one `ServedVersion` snapshot, so an answer never mixes two versions.

Per request batch: ONE Feast get_online_features call (user_features + user_embedding for every user_id), ONE
SQL read of the users' history, one tower forward for the users that need it, one retrieval round (widened by
retrieval.widen_until_k for requests whose filters leave fewer than k), numpy filters.

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


@dataclass
class _Job:
    request: RecommendRequest
    facts: UserFacts
    source: Source
    cold_start: bool
    vector: np.ndarray | None = None
    pending: tuple[str, ...] = ()  # items of events since the publish (they steer the tower's vector)


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
            hits = version.retriever.search(np.stack([j.vector for j in with_vector]), first)
            for job, hit in zip(with_vector, hits, strict=True):
                select = partial(_filter, version, job)
                results[id(job)] = widen_until_k(version.retriever, job.vector, first, job.request.k, select, hit)
        for job in jobs:
            if job.vector is None:
                results[id(job)] = _filter(version, job, version.popular_rows, version.popular_scores)
        return [_response(version, job, results[id(job)]) for job in jobs]


def _filter(version: ServedVersion, job: _Job, rows: np.ndarray, scores: np.ndarray) -> FilterResult:
    context = job.request.context
    return version.filters.apply(rows, scores, job.facts, context.moment(), context.device, context.season)


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
