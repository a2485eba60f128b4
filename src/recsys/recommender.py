"""The online path: request -> Feast user features -> user vector -> candidates -> filters -> top k.

Used by the KServe predictor (serving/) and by `recsys recommend`. Everything a request needs for one model
version (user tower, item vectors / retriever, item catalogue, compiled filters, popularity) lives in one
immutable ServingState; a poller thread watches the live model_version in Postgres and swaps in a whole new
state when a newer one is published, so no answer ever mixes two versions. The state is built only when the
model dir holds the tower of exactly the live version.

Per request batch: ONE Feast get_online_features call (user_features + user_embedding for every user_id), ONE
SQL read of the users' history, one tower forward for the users that need it, one retrieval round (widened for
requests whose filters leave fewer than k), numpy filters.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys import db, history, index, schema
from recsys.config import Settings, get_settings
from recsys.filters import NO_ROWS, CompiledFilters, FilterConfig, UserFacts, parse_preferences
from recsys.item_catalogue import ItemCatalogue, load_from_feast
from recsys.model.artifacts import MODEL_VERSION_FILE, ModelDirError, TrainedModel, load_model
from recsys.request_models import RecommendRequest
from recsys.retrieval import (
    ExactRetriever,
    HnswRetriever,
    IndexVersionGone,
    Retriever,
    Strategy,
    choose_strategy,
)

log = logging.getLogger(__name__)

DB_ERRORS = (psycopg.Error, PoolTimeout, db.DatabaseError, OSError)
USER_FEATURES = (schema.AGE, schema.GENDER, schema.PREFERENCES)
USER_FEATURE_REFS = [f"{schema.VIEW_USER_FEATURES}:{name}" for name in USER_FEATURES] + [
    f"{schema.VIEW_USER_EMBEDDING}:{schema.USER_VECTOR}",
    f"{schema.VIEW_USER_EMBEDDING}:{schema.MODEL_VERSION}",
]
# where a request's user vector came from
SOURCE_STORED, SOURCE_TOWER, SOURCE_POPULARITY = "stored_embedding", "user_tower", "popularity"


class ServingSettings(BaseSettings):
    """Knobs of the online path (env prefix RECSYS_SERVING_)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_SERVING_", extra="forbid")

    retrieval: Strategy = Field(default="auto", description="exact | hnsw | auto (exact up to 500k items)")
    poll_interval_s: float = Field(default=2.0, gt=0, description="how often the live model_version is checked")
    overfetch: int = Field(default=4, ge=1, description="first candidate pool = overfetch * k (widened x4)")
    min_candidates: int = Field(default=50, ge=1, description="first candidate pool is at least this")
    hnsw_ef_search: int = Field(default=200, ge=1, le=1000)
    pool_size: int = Field(default=4, ge=1, description="max Postgres connections of the predictor")
    filters_file: Path | None = Field(default=None, description="JSON FilterConfig replacing the defaults")


class NotReady(RuntimeError):
    """No consistent model version is loaded or the database does not answer (HTTP 503)."""


@dataclass(frozen=True, eq=False)
class ServingState:
    """Everything one model version serves with; replaced whole, never mutated."""

    model_version: str
    model: TrainedModel
    catalogue: ItemCatalogue
    retriever: Retriever
    filters: CompiledFilters
    popular_rows: np.ndarray  # catalogue rows, most popular first
    popular_scores: np.ndarray  # popularity / max popularity, aligned with popular_rows


@dataclass
class _Job:
    request: RecommendRequest
    facts: UserFacts
    source: str
    cold_start: bool
    vector: np.ndarray | None = None


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def load_filter_config(path: Path | None) -> FilterConfig:
    return FilterConfig() if path is None else FilterConfig.model_validate(json.loads(Path(path).read_text()))


class Recommender:
    """The online path over one live model version at a time (thread-safe; `recommend` never blocks on a swap)."""

    def __init__(
        self,
        model_dir: Path,
        settings: Settings | None = None,
        serving: ServingSettings | None = None,
        filter_config: FilterConfig | None = None,
        store: Any = None,
    ):
        self.model_dir = Path(model_dir)
        self.settings = settings or get_settings()
        self.serving = serving or ServingSettings()
        self.filter_config = filter_config or load_filter_config(self.serving.filters_file)
        self._store = store
        timeout = self.settings.db_timeout_s
        self._pool = ConnectionPool(
            conninfo=db.dsn(),
            min_size=1,
            max_size=self.serving.pool_size,
            timeout=timeout,
            kwargs={
                "autocommit": True,  # reads only: no COMMIT round trip per request
                "connect_timeout": max(1, round(timeout)),
                "options": f"-c statement_timeout={int(timeout * 1000)}",
            },
            configure=_register_vector,
            open=False,
        )
        self._pool.open(wait=False)
        self._state: ServingState | None = None
        self._db_ok = False
        self._refresh_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._skipped_version: str | None = None

    @classmethod
    def from_settings(cls, model_dir: Path | None = None, poll: bool = True, **kwargs: Any) -> Recommender:
        """A Recommender for the configured model dir, loaded if the database allows, polling for new versions."""
        settings = kwargs.pop("settings", None) or get_settings()
        recommender = cls(model_dir or settings.model_dir, settings=settings, **kwargs)
        try:
            recommender.refresh_version()
        except Exception:  # e.g. Feast views not applied yet: not ready, and the poller keeps trying
            log.exception("could not load the live model version")
        if poll:
            recommender.start_polling()
        return recommender

    # ------------------------------------------------------------------------------------------ lifecycle
    @property
    def store(self):
        if self._store is None:
            from recsys.features import get_store

            self._store = get_store(self.settings.feature_repo)
        return self._store

    @property
    def model_version(self) -> str | None:
        state = self._state
        return state.model_version if state else None

    def ready(self) -> bool:
        return self._state is not None and self._db_ok

    @property
    def pool(self) -> ConnectionPool:
        """The predictor's Postgres pool (search shares it)."""
        return self._pool

    def serving_state(self) -> ServingState:
        """The state of the version being served; NotReady while none is loaded or the database is down."""
        state = self._state
        if state is None or not self._db_ok:
            raise NotReady("the model or the database is not ready")
        return state

    def user_vectors(self, state: ServingState, requests: Sequence[RecommendRequest]) -> list[np.ndarray | None]:
        """Each request's user vector exactly as `recommend` finds it; None where it would fall back to popularity."""
        return [job.vector for job in self._plan(state, requests)]

    def start_polling(self) -> None:
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, name="recsys-version-poller", daemon=True)
            self._poller.start()

    def close(self) -> None:
        """Stop polling and close the connection pool."""
        self._stopping.set()
        self._wake.set()
        if self._poller is not None:
            self._poller.join(timeout=self.serving.poll_interval_s + self.settings.db_timeout_s + 1)
        self._pool.close()
        self._db_ok = False

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.serving.poll_interval_s)
            self._wake.clear()
            if not self._stopping.is_set():
                try:
                    self.refresh_version()
                except Exception:  # the poller must survive anything; the next poll retries
                    log.exception("version refresh failed")

    def refresh_version(self) -> str | None:
        """Check the database and the live model_version; load and swap in a new state if it changed.

        Returns the version being served (None while nothing consistent is loaded).
        """
        with self._refresh_lock:
            try:
                with self._pool.connection(timeout=self.settings.db_timeout_s) as conn:
                    live = index.live_model_version(conn)
                if not self._db_ok:
                    self._recover()
                if live is not None and live != self.model_version:
                    self._switch_to(live)
            except DB_ERRORS as exc:
                if self._db_ok:
                    log.warning("database unavailable: %s", type(exc).__name__)
                self._db_ok = False
            return self.model_version

    def _recover(self) -> None:
        """After an outage: drop broken pooled connections (ours and Feast's) before declaring the DB usable."""
        self._pool.check()
        probe = [{schema.USER_ID: ""}]
        for _ in range(32):  # each failed probe discards one stale connection of Feast's pool
            try:
                self.store.get_online_features(features=USER_FEATURE_REFS, entity_rows=probe)
                break
            except DB_ERRORS:
                continue
        else:
            raise psycopg.OperationalError("feature store still unreachable")
        self._db_ok = True
        log.info("database available")

    def _model_for(self, version: str) -> TrainedModel | None:
        for candidate in (self.model_dir, self.model_dir / version):
            version_file = candidate / MODEL_VERSION_FILE
            if version_file.is_file() and version_file.read_text().strip() == version:
                try:
                    return load_model(candidate)
                except (ModelDirError, RuntimeError, OSError) as exc:  # broken or foreign files: keep serving
                    if self._skipped_version != version:
                        log.error("cannot load model_version %s from %s: %s", version, candidate, exc)
                        self._skipped_version = version
                    return None
        if self._skipped_version != version:
            log.warning(
                "live model_version %s not found in %s: still serving %s", version, self.model_dir, self.model_version
            )
            self._skipped_version = version
        return None

    def _switch_to(self, version: str) -> None:
        model = self._model_for(version)
        if model is None:
            return
        with self._pool.connection(timeout=self.settings.db_timeout_s) as conn:
            ids, matrix = index.load_vectors(conn, version, schema.ITEM_VECTOR_TABLE)
            popularity = history.item_popularity(conn)
        ids = [str(i) for i in ids]
        catalogue = load_from_feast(self.store, ids)
        strategy = choose_strategy(self.serving.retrieval, len(ids))
        retriever: Retriever
        if strategy == "exact":
            retriever = ExactRetriever(np.asarray(matrix, dtype=np.float32))
        else:
            retriever = HnswRetriever(
                self._pool, catalogue, version, self.serving.hnsw_ef_search, timeout_s=self.settings.db_timeout_s
            )
        counts = np.array([popularity.get(i, 0.0) for i in ids], dtype=np.float64)
        order = np.argsort(-counts, kind="stable")
        top = counts.max() if len(counts) and counts.max() > 0 else 1.0
        self._state = ServingState(
            model_version=version,
            model=model,
            catalogue=catalogue,
            retriever=retriever,
            filters=CompiledFilters(self.filter_config, catalogue),
            popular_rows=order.astype(np.int64),
            popular_scores=(counts[order] / top).astype(np.float32),
        )
        self._skipped_version = None
        log.info("serving model_version %s (%d items, %s retrieval)", version, len(ids), strategy)

    # ------------------------------------------------------------------------------------------ requests
    def recommend(self, requests: Sequence[RecommendRequest]) -> list[dict[str, Any]]:
        """Top-k per request, in order. Raises NotReady (no consistent version / database down)."""
        state = self._state
        if state is None or not self._db_ok:
            raise NotReady("the model or the database is not ready")
        try:
            return self._recommend(state, requests)
        except DB_ERRORS as exc:
            self._wake.set()  # let the poller decide quickly whether the database is down
            raise NotReady(f"database unavailable ({type(exc).__name__})") from None
        except IndexVersionGone:
            self._wake.set()  # a newer version is being published: pick it up now
            raise NotReady(f"model_version {state.model_version} is being replaced") from None

    def _read_users(self, user_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, history.UserHistory]]:
        if not user_ids:
            return {}, {}
        rows = [{schema.USER_ID: u} for u in user_ids]
        table = self.store.get_online_features(features=USER_FEATURE_REFS, entity_rows=rows).to_dict()
        names = [*USER_FEATURES, schema.USER_VECTOR, schema.MODEL_VERSION]
        features = {u: {name: table[name][i] for name in names} for i, u in enumerate(user_ids)}
        with self._pool.connection(timeout=self.settings.db_timeout_s) as conn:
            histories = history.read_user_history(conn, user_ids)
        return features, histories

    def _plan(self, state: ServingState, requests: Sequence[RecommendRequest]) -> list[_Job]:
        user_ids = list(dict.fromkeys(r.user_id for r in requests if r.user_id is not None))
        features, histories = self._read_users(user_ids)
        exclude = self.filter_config.history.exclude
        jobs, tower_rows, tower_jobs = [], [], []
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
                excluded_items=state.catalogue.positions(past.items(exclude)) if past else NO_ROWS,
            )
            vector = found.get(schema.USER_VECTOR)
            known = request.user_id is not None and request.user_id in state.model.recent_items
            if not _missing(vector) and found.get(schema.MODEL_VERSION) == state.model_version:
                jobs.append(
                    _Job(request, facts, SOURCE_STORED, cold_start=False, vector=np.asarray(vector, dtype=np.float32))
                )
            elif known or age is not None or gender is not None or prefs is not None:
                job = _Job(request, facts, SOURCE_TOWER, cold_start=not known)
                jobs.append(job)
                tower_jobs.append(job)
                tower_rows.append(
                    {schema.USER_ID: request.user_id, schema.AGE: age, schema.GENDER: gender, schema.PREFERENCES: prefs}
                )
            else:
                jobs.append(_Job(request, facts, SOURCE_POPULARITY, cold_start=True))
        if tower_rows:
            vectors = state.model.encode_users(pd.DataFrame(tower_rows))
            for job, vector in zip(tower_jobs, vectors, strict=True):
                job.vector = vector
        return jobs

    def _recommend(self, state: ServingState, requests: Sequence[RecommendRequest]) -> list[dict[str, Any]]:
        jobs = self._plan(state, requests)
        with_vector = [j for j in jobs if j.vector is not None]
        results: dict[int, Any] = {}
        if with_vector:
            first = max(self.serving.min_candidates, self.serving.overfetch * max(j.request.k for j in with_vector))
            queries = np.stack([j.vector for j in with_vector])
            hits = state.retriever.search(queries, first)
            for job, (rows, scores) in zip(with_vector, hits, strict=True):
                results[id(job)] = self._filter_widening(state, job, rows, scores, first)
        for job in jobs:
            if job.vector is None:
                results[id(job)] = self._apply(state, job, state.popular_rows, state.popular_scores)
        return [self._response(state, job, results[id(job)]) for job in jobs]

    def _apply(self, state: ServingState, job: _Job, rows: np.ndarray, scores: np.ndarray):
        context = job.request.context
        return state.filters.apply(rows, scores, job.facts, context.moment(), context.device, context.season)

    def _filter_widening(self, state: ServingState, job: _Job, rows: np.ndarray, scores: np.ndarray, n: int):
        """Filter the pool; while fewer than k survive and the retriever can give more, retrieve 4x more."""
        result = self._apply(state, job, rows, scores)
        while len(result.rows) < job.request.k and n < state.retriever.max_candidates:
            n = min(n * 4, state.retriever.max_candidates)
            rows, scores = state.retriever.search(job.vector[None, :], n)[0]
            result = self._apply(state, job, rows, scores)
        return result

    @staticmethod
    def _response(state: ServingState, job: _Job, result) -> dict[str, Any]:
        k = job.request.k
        items = state.catalogue.describe(result.rows[:k], result.scores[:k])
        return {
            schema.USER_ID: job.request.user_id,
            schema.MODEL_VERSION: state.model_version,
            "cold_start": job.cold_start,
            "source": job.source,
            "items": items,
            "filtered": result.removed,
        }


def _register_vector(conn: psycopg.Connection) -> None:
    from pgvector.psycopg import register_vector

    register_vector(conn)
