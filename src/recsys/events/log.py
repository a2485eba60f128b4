"""The durable event log (schema.EVENT_LOG_TABLE) and the one transaction that accepts a batch of events.

`record_events` checks the items against the published catalogue (the pgvector item table of the live
version), inserts the batch with ON CONFLICT (event_id) DO NOTHING (a replay is a counted duplicate, never a
second row) and folds the new events into recsys.history, all in ONE statement (one transaction): when it
returns, the events are committed and the next recommendation sees them; when it raises, nothing was written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import psycopg
import psycopg.errors
from psycopg import sql

from recsys import history, schema
from recsys.events.contract import EventError, InteractionEvent

# column -> SQL type, in insert order (received_at is filled by the server)
LOG_COLUMNS = {
    schema.EVENT_ID: "text",
    schema.USER_ID: "text",
    schema.ITEM_ID: "text",
    schema.INTERACTION_TYPE: "text",
    schema.TIMESTAMP: "timestamptz",
    schema.RATING: "float8",
    schema.QUANTITY: "integer",
}
NULLABLE = (schema.RATING, schema.QUANTITY)


class NoCatalogue(RuntimeError):
    """No model has been published yet, so no item can be checked (HTTP 503: retry after a publish)."""


@dataclass(frozen=True)
class RecordResult:
    accepted: int  # events written now
    duplicates: int  # events whose event_id was already logged (or repeated within the batch)
    new_events: tuple[InteractionEvent, ...]  # the accepted ones, in batch order

    def as_response(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates}


def ensure_event_log(conn: psycopg.Connection) -> None:
    """Create the event log and the history table (with its `pending` column) if missing."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            sql.Identifier(name),
            sql.SQL(kind),
            sql.SQL(" PRIMARY KEY" if name == schema.EVENT_ID else "" if name in NULLABLE else " NOT NULL"),
        )
        for name, kind in LOG_COLUMNS.items()
    )
    with conn.transaction():
        # CREATE TABLE IF NOT EXISTS races between concurrent first calls (two workers): serialise them
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema.EVENT_LOG_TABLE,))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} ({columns}, {received} timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(
                t=sql.Identifier(schema.EVENT_LOG_TABLE), columns=columns, received=sql.Identifier(schema.RECEIVED_AT)
            )
        )
        history.ensure_history_table(conn)


class ItemCheck:
    """Which item ids the published catalogue (the live version's pgvector item table) holds.

    Ids found are remembered for KNOWN_TTL_S, so a stream of events about known items costs no query; an id not
    found is looked up every time (a publish may just have added it). An item removed by a publish is still
    accepted for up to KNOWN_TTL_S: harmless, the log keeps events of items that left anyway.
    """

    KNOWN_TTL_S = 5.0

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._since = time.monotonic()
        self._lock = threading.Lock()

    def unknown(self, conn: psycopg.Connection, item_ids: Sequence[str]) -> set[str]:
        with self._lock:
            if time.monotonic() - self._since > self.KNOWN_TTL_S:
                self._known, self._since = set(), time.monotonic()
            missing = set(item_ids) - self._known
        if not missing:
            return set()
        query = sql.SQL("SELECT {id} FROM {t} WHERE {id} = ANY(%s)").format(
            id=sql.Identifier(schema.ITEM_ID), t=sql.Identifier(schema.ITEM_VECTOR_TABLE)
        )
        try:
            found = {row[0] for row in conn.execute(query, (list(missing),)).fetchall()}
        except psycopg.errors.UndefinedTable:
            raise NoCatalogue("no catalogue is published yet: publish a model before sending events") from None
        with self._lock:
            self._known |= found
        return missing - found


def record_events(
    conn: psycopg.Connection, events: Sequence[InteractionEvent], items: ItemCheck | None = None
) -> RecordResult:
    """Log a validated batch and apply it to the users' history, all or nothing: ONE statement (one implicit
    transaction on an autocommit connection), so the answer comes after the commit.

    Raises EventError (nothing written) when an item is not in the published catalogue, NoCatalogue before the
    first publish, and psycopg errors when the database fails (nothing written either: the client may retry).
    The log must exist (`ensure_event_log`).
    """
    if not events:
        return RecordResult(0, 0, ())
    unknown = (items or ItemCheck()).unknown(conn, [e.item_id for e in events])
    if unknown:
        index = next(i for i, e in enumerate(events) if e.item_id in unknown)
        raise EventError("unknown item id (not in the published catalogue)", index, schema.ITEM_ID)
    columns = [
        [e.event_id for e in events],
        [e.user_id for e in events],
        [e.item_id for e in events],
        [e.interaction_type for e in events],
        [e.moment for e in events],
        [e.rating for e in events],
        [e.quantity for e in events],
    ]
    names = sql.SQL(", ").join(map(sql.Identifier, LOG_COLUMNS))
    event_id = sql.Identifier(schema.EVENT_ID)
    query = sql.SQL(
        "WITH input AS (SELECT * FROM unnest({arrays}) WITH ORDINALITY AS e({names}, ord)), "
        "inserted AS (INSERT INTO {log} ({names}) SELECT {names} FROM input ON CONFLICT ({id}) DO NOTHING "
        "RETURNING {id}), "
        # an id repeated within the batch was written once: fold its first occurrence only
        "new AS (SELECT DISTINCT ON (input.{id}) {fold_columns} FROM input JOIN inserted USING ({id}) "
        "ORDER BY input.{id}, ord), "
        "folded AS ({fold} RETURNING 1) "
        "SELECT {id} FROM inserted"
    ).format(
        arrays=sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(kind)) for kind in LOG_COLUMNS.values()),
        names=names,
        log=sql.Identifier(schema.EVENT_LOG_TABLE),
        id=event_id,
        fold_columns=sql.SQL(", ").join(
            sql.SQL("input.{}").format(sql.Identifier(c)) for c in history.FOLD_SOURCE_COLUMNS
        ),
        fold=history.fold_statement("new"),
    )
    inserted = {row[0] for row in conn.execute(query, columns).fetchall()}
    new_events, seen = [], set()
    for event in events:  # the first of repeated ids within the batch is the one that was written
        if event.event_id in inserted and event.event_id not in seen:
            seen.add(event.event_id)
            new_events.append(event)
    return RecordResult(len(new_events), len(events) - len(new_events), tuple(new_events))


def _history_event(event: InteractionEvent) -> history.HistoryEvent:
    return history.HistoryEvent(event.user_id, event.item_id, event.interaction_type, event.moment)


def read_event_log(conn: psycopg.Connection) -> pd.DataFrame:
    """Every logged event, oldest received first, with LOG_COLUMNS and received_at (empty without a log)."""
    names = [*LOG_COLUMNS, schema.RECEIVED_AT]
    if conn.execute("SELECT to_regclass(%s)", (schema.EVENT_LOG_TABLE,)).fetchone()[0] is None:
        return pd.DataFrame({name: [] for name in names})
    query = sql.SQL("SELECT {names} FROM {t} ORDER BY {received}, {id}").format(
        names=sql.SQL(", ").join(map(sql.Identifier, names)),
        t=sql.Identifier(schema.EVENT_LOG_TABLE),
        received=sql.Identifier(schema.RECEIVED_AT),
        id=sql.Identifier(schema.EVENT_ID),
    )
    with conn.cursor() as cur:
        cur.execute(query)
        return pd.DataFrame(cur.fetchall(), columns=names)


def fold_events_missing_from(conn: psycopg.Connection, interaction_ids: Sequence[str]) -> int:
    """Fold into the history every logged event whose event_id is not among `interaction_ids` (the data set a
    model is published from); publish calls it in its transaction, right after rewriting the history from that
    data set, so events newer than the data set stay visible. Returns the number of events folded."""
    log = read_event_log(conn)
    missing = log[~log[schema.EVENT_ID].isin(pd.Index(interaction_ids))]
    if missing.empty:
        return 0
    missing = missing.sort_values([schema.TIMESTAMP, schema.RECEIVED_AT], kind="stable")
    rows = missing[[schema.USER_ID, schema.ITEM_ID, schema.INTERACTION_TYPE, schema.TIMESTAMP]]
    history.fold_events(conn, [history.HistoryEvent(*row) for row in rows.itertuples(index=False)])
    return len(missing)
