"""The serving-state side of the online path: the Postgres pool, the Feast store, the version poller, and the
model version being served.

`ServingState` owns the connections and the lifecycle; the request side (recsys.recommender for
recommendations, recsys.search for search and similar items) asks it for `current()` once per call and works
on that snapshot. Everything one model version serves with (user tower and reranker, item vectors /
retriever, item catalogue, compiled filters, popularity) lives in one immutable `ServedVersion`; a poller
thread watches the live model_version in Postgres and swaps in a whole new one when a newer version is
published, so no answer ever mixes two versions. A version is loaded only when the model dir holds the
tower of exactly that version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys import db, history, model_store, schema
from recsys.config import Settings, get_settings
from recsys.filters import CompiledFilters, FilterConfig, load_filter_config
from recsys.item_catalogue import ItemCatalogue, load_from_feast
from recsys.model.artifacts import MODEL_VERSION_FILE, ModelDirError, TrainedModel, load_model
from recsys.retrieval import ExactRetriever, HnswRetriever, IndexVersionGone, Retriever, Strategy, choose_strategy
from recsys.vector_index import queries, registry

log = logging.getLogger(__name__)

DB_ERRORS = (psycopg.Error, PoolTimeout, db.DatabaseError, OSError)
# failures that say the database itself is unreachable (not that it rejected one query)
CONNECTION_ERRORS = (psycopg.OperationalError, PoolTimeout, db.DatabaseError, OSError)
RECONNECT_DELAY_S = 0.25  # between attempts to replace a lost pooled connection (psycopg_pool: 1, 2, 4, 8... s)
DOWN_POLL_INTERVAL_S = 0.25  # how often the poller checks a database that is down
USER_FEATURES = (schema.AGE, schema.GENDER, schema.PREFERENCES)
# what the online path reads per user in one Feast call: profile features, stored vector and its version
USER_FEATURE_REFS = [f"{schema.VIEW_USER_FEATURES}:{name}" for name in USER_FEATURES] + [
    f"{schema.VIEW_USER_EMBEDDING}:{schema.USER_VECTOR}",
    f"{schema.VIEW_USER_EMBEDDING}:{schema.MODEL_VERSION}",
]


class ServingSettings(BaseSettings):
    """Knobs of the online path (env prefix RECSYS_SERVING_)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_SERVING_", extra="forbid")

    retrieval: Strategy = Field(default="auto", description="exact | hnsw | auto (exact up to 500k items)")
    poll_interval_s: float = Field(default=2.0, gt=0, description="how often the live model_version is checked")
    overfetch: int = Field(default=4, ge=1, description="first candidate pool = overfetch * k (widened x4)")
    min_candidates: int = Field(default=50, ge=1, description="first candidate pool is at least this")
    hnsw_ef_search: int = Field(default=200, ge=1, le=1000)
    pool_size: int = Field(default=4, ge=1, description="max Postgres connections of the predictor")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="largest request body the predictor reads (413 above)"
    )
    filters_file: Path | None = Field(default=None, description="JSON FilterConfig replacing the defaults")
    event_weight: float = Field(
        default=1.0, ge=0, description="weight of a user's events since the publish (0: the user tower alone)"
    )

    def first_pool(self, k: int) -> int:
        """Candidates retrieved first for a top-k answer (retrieval.widen_until_k widens from there)."""
        return max(self.min_candidates, self.overfetch * k)


class NotReady(RuntimeError):
    """No consistent model version is loaded or the database does not answer (HTTP 503)."""


class QueryFailed(NotReady):
    """The database is up but failed this request's query (HTTP 503; other requests of its batch are unaffected)."""


def _retry_lost_connections_quickly() -> None:
    """psycopg_pool retries a lost connection after 1, 2, 4, 8... s, so after a 15 s outage the next attempt can be
    16 s away (measured: the first 200 came 11-12 s after the database was back). Retrying every
    RECONNECT_DELAY_S instead brings the online path back within a second; it applies to every pool of the
    process, Feast's online-store pool included, which is the point. A refused connection costs ~0.1 ms."""
    AttemptWithBackoff.INITIAL_DELAY = RECONNECT_DELAY_S
    AttemptWithBackoff.DELAY_BACKOFF = 1.0


@dataclass(frozen=True, eq=False)
class ServedVersion:
    """Everything one model version serves with; replaced whole, never mutated."""

    model_version: str
    model: TrainedModel
    catalogue: ItemCatalogue
    retriever: Retriever  # two-tower item vectors
    filters: CompiledFilters
    popular_rows: np.ndarray  # catalogue rows, most popular first
    popular_scores: np.ndarray  # popularity / max popularity, aligned with popular_rows
    rerank_positions: np.ndarray | None = None  # catalogue row -> position in model.item_ids, with a reranker


class ServingState:
    """Pool, store and the live model version, kept current by a poller (thread-safe; `current` never blocks)."""

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
        _retry_lost_connections_quickly()
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
        self._version: ServedVersion | None = None
        self._db_ok: bool | None = None  # None: not checked yet (the first outage is logged too)
        self._refresh_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._skipped_version: str | None = None  # the live version that could not be loaded
        self._skip_reason: str | None = None  # why (readiness says it)

    @classmethod
    def from_settings(cls, model_dir: Path | None = None, poll: bool = True, **kwargs: Any) -> ServingState:
        """The state for the model dir (default: RECSYS_MODEL_DIR, else the model store), loaded if the database
        allows, polling for new versions."""
        settings = kwargs.pop("settings", None) or get_settings()
        model_dir = model_dir or settings.model_dir or model_store.store_dir(settings)
        state = cls(model_dir, settings=settings, **kwargs)
        try:
            state.refresh_version()
        except Exception:  # e.g. Feast views not applied yet: not ready, and the poller keeps trying
            log.exception("could not load the live model version")
        if poll:
            state.start_polling()
        return state

    # ------------------------------------------------------------------------------------------ for requests
    @property
    def store(self):
        if self._store is None:
            from recsys.feature_store import get_store

            self._store = get_store(self.settings.feature_repo)
        return self._store

    @property
    def model_version(self) -> str | None:
        version = self._version
        return version.model_version if version else None

    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """None when serving the live version with the database up; else why not (readiness answers it)."""
        if not self._db_ok:
            return "the database is unavailable"
        if self._skip_reason is not None:  # serving an older version, or none: not ready, whatever it still answers
            return self._skip_reason
        if self._version is None:
            return "no model_version is live in the database yet"
        return None

    def current(self) -> ServedVersion:
        """The version being served; NotReady while none is loaded or the database is down."""
        version = self._version
        if version is None or not self._db_ok:
            raise NotReady("the model or the database is not ready")
        return version

    def connection(self):
        """A pooled connection (context manager), waiting at most the configured DB timeout."""
        return self._pool.connection(timeout=self.settings.db_timeout_s)

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Around a request's work: a database failure, or vectors of the served version vanishing under a
        publish, becomes NotReady (HTTP 503) and makes the poller look at the database and live version now."""
        try:
            yield
        except psycopg.errors.QueryCanceled:  # statement timeout of this request's query: the database is up
            raise QueryFailed("a database query took too long") from None
        except CONNECTION_ERRORS as exc:
            self._wake.set()
            raise NotReady(f"database unavailable ({type(exc).__name__})") from None
        except (*DB_ERRORS, UnicodeEncodeError) as exc:
            raise QueryFailed(f"a database query failed ({type(exc).__name__})") from None
        except IndexVersionGone as exc:
            self._wake.set()
            raise NotReady(f"the served model_version is being replaced ({exc})") from None

    def build_retriever(
        self, catalogue: ItemCatalogue, model_version: str, table: str, exact_matrix: Callable[[], np.ndarray]
    ) -> Retriever:
        """The one retriever factory of the online path, for any vector table of a version.

        Exact (in memory) over `exact_matrix()` (rows aligned with the catalogue; called only for exact) or
        HNSW in Postgres over `table`, as ServingSettings.retrieval chooses for the catalogue's size.
        """
        if choose_strategy(self.serving.retrieval, len(catalogue)) == "exact":
            return ExactRetriever(exact_matrix())
        return HnswRetriever(
            self._pool,
            catalogue,
            model_version,
            self.serving.hnsw_ef_search,
            table=table,
            timeout_s=self.settings.db_timeout_s,
        )

    # ------------------------------------------------------------------------------------------ lifecycle
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
            self._wake.wait(self.serving.poll_interval_s if self._db_ok else DOWN_POLL_INTERVAL_S)
            self._wake.clear()
            if not self._stopping.is_set():
                try:
                    self.refresh_version()
                except Exception:  # the poller must survive anything; the next poll retries
                    log.exception("version refresh failed")

    def refresh_version(self) -> str | None:
        """Check the database and the live model_version; load and swap in a new version if it changed.

        Returns the version being served (None while nothing consistent is loaded).
        """
        with self._refresh_lock:
            try:
                with self.connection() as conn:
                    live = registry.live_model_version(conn)
                if not self._db_ok:
                    self._recover()
                if live is not None and live != self.model_version:
                    self._try_switch_to(live)
                elif live == self.model_version:
                    self._skipped_version = self._skip_reason = None  # e.g. a bad publish rolled back
            except DB_ERRORS as exc:
                if self._db_ok is not False:  # once per state change
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
                    self._skip(version, f"the live model_version {version} cannot be loaded from {candidate}: {exc}")
                    return None
        self._skip(
            version,
            f"the live model_version {version} is not in {self.model_dir} (`recsys models list` shows the stored ones)",
        )
        return None

    def _skip(self, version: str, reason: str) -> None:
        """Remember (and log once per version) that the live version cannot be served."""
        if self._skipped_version != version:
            log.warning("%s; serving %s meanwhile", reason, self.model_version or "nothing")
        self._skipped_version, self._skip_reason = version, reason

    def _try_switch_to(self, version: str) -> None:
        """Switch, or record why the live version cannot be served (database errors go to the caller)."""
        try:
            self._switch_to(version)
        except DB_ERRORS:
            raise
        except Exception as exc:  # e.g. Feast views not applied yet: not ready, and the poller keeps trying
            reason = f"the live model_version {version} cannot be loaded: {type(exc).__name__}"
            if self._skipped_version != version:
                log.exception("%s; serving %s meanwhile", reason, self.model_version or "nothing")
            self._skipped_version, self._skip_reason = version, reason

    def _switch_to(self, version: str) -> None:
        model = self._model_for(version)
        if model is None:
            return
        with self.connection() as conn:
            ids, matrix = queries.load_vectors(conn, version, schema.ITEM_VECTOR_TABLE)
            popularity = history.item_popularity(conn)
        ids = [str(i) for i in ids]
        catalogue = load_from_feast(self.store, ids)
        retriever = self.build_retriever(catalogue, version, schema.ITEM_VECTOR_TABLE, lambda: matrix)
        counts = np.array([popularity.get(i, 0.0) for i in ids], dtype=np.float64)
        order = np.argsort(-counts, kind="stable")
        top = counts.max() if len(counts) and counts.max() > 0 else 1.0
        self._version = ServedVersion(
            model_version=version,
            model=model,
            catalogue=catalogue,
            retriever=retriever,
            filters=CompiledFilters(self.filter_config, catalogue),
            popular_rows=order.astype(np.int64),
            popular_scores=(counts[order] / top).astype(np.float32),
            rerank_positions=None if model.reranker is None else model.item_positions(ids),
        )
        self._skipped_version = self._skip_reason = None
        log.info("serving model_version %s (%d items, %s retrieval)", version, len(ids), retriever.strategy)


def _register_vector(conn: psycopg.Connection) -> None:
    from pgvector.psycopg import register_vector

    register_vector(conn)
