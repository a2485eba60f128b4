"""Accepting a batch of events: validate, log + apply online in one transaction, then mirror to Feast.

One `EventIngest` serves the predictor's POST /v1/events (its own small connection pool, made on first use in
each worker process) and `recsys events add|load` without --url (one connection per call).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from recsys import db
from recsys.config import Settings, get_settings
from recsys.events.contract import parse_event_batch
from recsys.events.feast_push import FeastEventPusher
from recsys.events.log import ItemCheck, NoCatalogue, RecordResult, ensure_event_log, record_events

# the database (or the catalogue) cannot take events now: HTTP 503, and a retry is safe (event_id dedups)
UNAVAILABLE = (psycopg.Error, PoolTimeout, db.DatabaseError, OSError, NoCatalogue)
POOL_SIZE = 8  # connections for events, apart from the recommendation pool: concurrent commits share fsyncs


class EventIngest:
    """validate -> record_events (committed before returning) -> Feast push in the background. Thread-safe."""

    def __init__(
        self,
        connection: Callable[[], AbstractContextManager[psycopg.Connection]],
        pusher: FeastEventPusher | None,
        close: Callable[[], None] = lambda: None,
    ):
        self._connection = connection
        self._pusher = pusher
        self._log_ready = False
        self._items = ItemCheck()
        self.close = close  # releases the connections (the predictor's stop())

    def ingest(self, payload: Any) -> RecordResult:
        """Raises EventError (400, nothing written) or one of UNAVAILABLE (503, nothing written)."""
        events = parse_event_batch(payload)
        with self._connection() as conn:
            if not self._log_ready:
                ensure_event_log(conn)
                self._log_ready = True
            result = record_events(conn, events, self._items)
        if self._pusher is not None:
            self._pusher.submit(result.new_events)
        return result

    def flush_feast(self, timeout_s: float = 10.0) -> bool:
        """Wait for the Feast mirror to catch up (tests, `recsys events` before exiting)."""
        return self._pusher.flush(timeout_s) if self._pusher is not None else True

    @classmethod
    def in_process(cls, settings: Settings | None = None, feast: bool = True) -> EventIngest:
        """One connection per call (the CLI); with `feast`, events are mirrored to the configured repo."""
        settings = settings or get_settings()

        @contextlib.contextmanager
        def connection() -> Iterator[psycopg.Connection]:
            with db.connect(timeout_s=settings.db_timeout_s) as conn:
                yield conn

        return cls(connection, _pusher(settings) if feast else None)

    @classmethod
    def pooled(cls, settings: Settings | None = None) -> EventIngest:
        """A pool of POOL_SIZE connections with the online statement timeout (the predictor)."""
        settings = settings or get_settings()
        pool = _LazyPool(settings)
        return cls(pool.connection, _pusher(settings), close=pool.close)


def _pusher(settings: Settings) -> FeastEventPusher:
    def store() -> Any:
        from recsys.feature_store import get_store

        return get_store(settings.feature_repo)

    return FeastEventPusher(store)


class _LazyPool:
    """The pool is opened on first use in each process: a ModelServer forks its workers after load()."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._pool: ConnectionPool | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def connection(self) -> AbstractContextManager[psycopg.Connection]:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                timeout = self._settings.db_timeout_s
                self._pool = ConnectionPool(
                    conninfo=db.dsn(),
                    min_size=1,
                    max_size=POOL_SIZE,
                    timeout=timeout,
                    kwargs={
                        "autocommit": True,  # record_events opens its own transaction
                        "connect_timeout": max(1, round(timeout)),
                        "options": f"-c statement_timeout={int(timeout * 1000)}",
                    },
                    open=True,
                )
                self._pid = os.getpid()
            pool = self._pool
        return pool.connection(timeout=self._settings.db_timeout_s)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.close()
            self._pool = None
