"""Per-user interaction history in Postgres (schema.USER_HISTORY_TABLE), read by the history filter.

One row per user: the item ids purchased (purchase and rate: a rated item is owned), carted and positively
viewed, plus the newest interaction time folded in. Writes are idempotent upserts that never let an older
snapshot overwrite a newer one.

Live events (recsys.events) are folded in by `fold_events`, in the transaction that logs them: item sets grow
by union, and their positive items are appended to `pending` (items the published user vector has not seen),
which sends the user through the user tower until the next publish resets it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import pandas as pd
import psycopg
from psycopg import sql

from recsys import schema

# interaction type -> history column
HISTORY_COLUMN_BY_TYPE = {
    schema.PURCHASE: schema.HISTORY_PURCHASED,
    schema.RATE: schema.HISTORY_PURCHASED,
    schema.CART: schema.HISTORY_CARTED,
    schema.POSITIVE_VIEW: schema.HISTORY_VIEWED,
}
HISTORY_COLUMNS = (schema.HISTORY_PURCHASED, schema.HISTORY_CARTED, schema.HISTORY_VIEWED)
# interaction types whose events the user tower pools (positive_mask: everything but negative views)
POSITIVE_TYPES = (schema.POSITIVE_VIEW, schema.CART, schema.PURCHASE, schema.RATE)
MAX_PENDING = 64  # pending items kept per user, newest last; the user tower pools fewer (model.inputs.MAX_HISTORY)


@dataclass(frozen=True)
class UserHistory:
    purchased: tuple[str, ...] = ()
    carted: tuple[str, ...] = ()
    viewed: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()  # positive items of events newer than the published user vector, oldest first

    def items(self, kinds: Iterable[str]) -> list[str]:
        """Item ids of the given kinds ('purchased', 'carted', 'viewed'), without duplicates."""
        return list(dict.fromkeys(i for kind in kinds for i in getattr(self, kind)))


def ensure_history_table(conn: psycopg.Connection, table: str = schema.USER_HISTORY_TABLE) -> None:
    arrays = sql.SQL(", ").join(
        sql.SQL("{} text[] NOT NULL DEFAULT '{{}}'").format(sql.Identifier(c))
        for c in (*HISTORY_COLUMNS, schema.HISTORY_PENDING)
    )
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} text PRIMARY KEY, {}, {} timestamptz NOT NULL)").format(
            sql.Identifier(table), sql.Identifier(schema.USER_ID), arrays, sql.Identifier(schema.HISTORY_UPDATED_AT)
        )
    )
    # a table made before events existed lacks `pending`; checked first, as ALTER would lock out readers
    has_pending = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
        (table, schema.HISTORY_PENDING),
    ).fetchone()
    if has_pending is None:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text[] NOT NULL DEFAULT '{{}}'").format(
                sql.Identifier(table), sql.Identifier(schema.HISTORY_PENDING)
            )
        )


def _history_rows(interactions: pd.DataFrame) -> pd.DataFrame:
    """One row per user: a sorted, de-duplicated item list per history column and the newest timestamp."""
    frame = interactions[[schema.USER_ID, schema.ITEM_ID, schema.INTERACTION_TYPE, schema.TIMESTAMP]].copy()
    frame[schema.TIMESTAMP] = pd.to_datetime(frame[schema.TIMESTAMP], utc=True)
    newest = frame.groupby(schema.USER_ID, sort=True)[schema.TIMESTAMP].max()
    frame["column"] = frame[schema.INTERACTION_TYPE].map(HISTORY_COLUMN_BY_TYPE)
    kept = frame.dropna(subset=["column"]).drop_duplicates([schema.USER_ID, schema.ITEM_ID, "column"])
    lists = kept.sort_values(schema.ITEM_ID).groupby([schema.USER_ID, "column"])[schema.ITEM_ID].agg(list)
    wide = lists.unstack("column").reindex(index=newest.index, columns=list(HISTORY_COLUMNS))
    wide = wide.map(lambda v: v if isinstance(v, list) else [])
    wide[schema.HISTORY_UPDATED_AT] = newest
    return wide.reset_index()


def write_user_history(
    conn: psycopg.Connection,
    interactions: pd.DataFrame,
    table: str = schema.USER_HISTORY_TABLE,
    replace: bool = False,
) -> int:
    """Upsert every user's history from an interactions frame (user_id, item_id, interaction_type, timestamp).

    Idempotent. By default a row is replaced only by a snapshot at least as new (incremental feeds).
    `replace=True` makes the table exactly this snapshot (users absent from it are dropped) with no pending
    items: publish uses it, because the history filter must match the data set the live model was published
    from (publish then folds in the logged events that data set lacks). Returns the number of users written.
    """
    rows = _history_rows(interactions)
    columns = [schema.USER_ID, *HISTORY_COLUMNS, schema.HISTORY_UPDATED_AT]
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    updates = sql.SQL(", ").join(
        [
            *(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                for c in [*HISTORY_COLUMNS, schema.HISTORY_UPDATED_AT]
            ),
            *([sql.SQL("{} = '{{}}'").format(sql.Identifier(schema.HISTORY_PENDING))] if replace else []),
        ]
    )
    staging = sql.Identifier(f"{table}_staging")
    with conn.transaction():
        ensure_history_table(conn, table)
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
                staging, sql.Identifier(table)
            )
        )
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, names)) as copy:
            for record in rows[columns].itertuples(index=False):
                copy.write_row([str(record[0]), *record[1:4], record[4].to_pydatetime()])
        conn.execute(
            sql.SQL(
                "INSERT INTO {table} ({names}) SELECT {names} FROM {staging} "
                "ON CONFLICT ({uid}) DO UPDATE SET {updates} {guard}"
            ).format(
                guard=sql.SQL("")
                if replace
                else sql.SQL("WHERE {}.{} <= EXCLUDED.{}").format(
                    sql.Identifier(table),
                    sql.Identifier(schema.HISTORY_UPDATED_AT),
                    sql.Identifier(schema.HISTORY_UPDATED_AT),
                ),
                table=sql.Identifier(table),
                names=names,
                staging=staging,
                uid=sql.Identifier(schema.USER_ID),
                updates=updates,
            )
        )
        if replace:
            conn.execute(
                sql.SQL("DELETE FROM {t} WHERE NOT EXISTS (SELECT 1 FROM {s} WHERE {s}.{u} = {t}.{u})").format(
                    t=sql.Identifier(table), s=staging, u=sql.Identifier(schema.USER_ID)
                )
            )
        # dropped now, not at commit: a caller's enclosing transaction may write history again
        conn.execute(sql.SQL("DROP TABLE {}").format(staging))
    return len(rows)


def read_user_history(
    conn: psycopg.Connection, user_ids: Iterable[str], table: str = schema.USER_HISTORY_TABLE
) -> dict[str, UserHistory]:
    """History of the given users (users without a row are absent from the result)."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return {}
    query = sql.SQL("SELECT {}, {} FROM {} WHERE {} = ANY(%s)").format(
        sql.Identifier(schema.USER_ID),
        sql.SQL(", ").join(map(sql.Identifier, (*HISTORY_COLUMNS, schema.HISTORY_PENDING))),
        sql.Identifier(table),
        sql.Identifier(schema.USER_ID),
    )
    with conn.cursor() as cur:
        cur.execute(query, (ids,))
        return {row[0]: UserHistory(*(tuple(v) for v in row[1:])) for row in cur.fetchall()}


class HistoryEvent(NamedTuple):
    """What the history needs of one event."""

    user_id: str
    item_id: str
    interaction_type: str
    timestamp: datetime


# the columns fold_statement reads from its source (`ord` breaks timestamp ties in arrival order)
FOLD_SOURCE_COLUMNS = (schema.USER_ID, schema.ITEM_ID, schema.INTERACTION_TYPE, schema.TIMESTAMP, "ord")


def _kinds(kinds: Iterable[str]) -> sql.Composable:
    return sql.SQL("{} IN ({})").format(
        sql.Identifier(schema.INTERACTION_TYPE), sql.SQL(", ").join(map(sql.Literal, kinds))
    )


def fold_statement(source: str, table: str = schema.USER_HISTORY_TABLE) -> sql.Composable:
    """INSERT ... ON CONFLICT that folds the events of `source` (a table or CTE with FOLD_SOURCE_COLUMNS, each
    event once) into their users' rows, creating rows for new users; usable as a CTE of a larger statement.

    Item sets grow by union and updated_at only moves forward, so an older event never undoes a newer one;
    positive items are appended to `pending`, oldest first, the newest MAX_PENDING kept.
    """
    item, at = sql.Identifier(schema.ITEM_ID), sql.Identifier(schema.TIMESTAMP)
    sets = [
        sql.SQL("coalesce(array_agg(DISTINCT {item} ORDER BY {item}) FILTER (WHERE {kinds}), '{{}}')").format(
            item=item, kinds=_kinds(t for t, c in HISTORY_COLUMN_BY_TYPE.items() if c == column)
        )
        for column in HISTORY_COLUMNS
    ]
    pending = sql.Identifier(schema.HISTORY_PENDING)
    keep = sql.Literal(MAX_PENDING)
    columns = [schema.USER_ID, *HISTORY_COLUMNS, schema.HISTORY_PENDING, schema.HISTORY_UPDATED_AT]
    return sql.SQL(
        "INSERT INTO {table} AS t ({names}) "
        "SELECT {uid}, {sets_out}, p[greatest(1, cardinality(p) - {keep} + 1):], newest FROM ("
        " SELECT {uid}, {sets}, coalesce(array_agg({item} ORDER BY {at}, ord) FILTER (WHERE {positive}), '{{}}') AS p,"
        " max({at}) AS newest FROM {source} GROUP BY {uid}) AS g "
        "ON CONFLICT ({uid}) DO UPDATE SET {unions}, "
        "{pending} = (t.{pending} || EXCLUDED.{pending})"
        "[greatest(1, cardinality(t.{pending}) + cardinality(EXCLUDED.{pending}) - {keep} + 1):], "
        "{updated} = greatest(t.{updated}, EXCLUDED.{updated})"
    ).format(
        table=sql.Identifier(table),
        names=sql.SQL(", ").join(map(sql.Identifier, columns)),
        uid=sql.Identifier(schema.USER_ID),
        sets_out=sql.SQL(", ").join(sql.Identifier(f"s{i}") for i in range(len(sets))),
        sets=sql.SQL(", ").join(sql.SQL("{} AS {}").format(e, sql.Identifier(f"s{i}")) for i, e in enumerate(sets)),
        keep=keep,
        item=item,
        at=at,
        positive=_kinds(POSITIVE_TYPES),
        source=sql.Identifier(source),
        unions=sql.SQL(", ").join(_array_union(c) for c in HISTORY_COLUMNS),
        pending=pending,
        updated=sql.Identifier(schema.HISTORY_UPDATED_AT),
    )


def _array_union(column: str) -> sql.Composable:
    """The stored item set united with the new one (sorted, distinct); untouched when nothing is new."""
    return sql.SQL(
        "{c} = CASE WHEN cardinality(EXCLUDED.{c}) = 0 THEN t.{c}"
        " ELSE ARRAY(SELECT DISTINCT x FROM unnest(t.{c} || EXCLUDED.{c}) AS x ORDER BY x) END"
    ).format(c=sql.Identifier(column))


def fold_events(
    conn: psycopg.Connection, events: Sequence[HistoryEvent], table: str = schema.USER_HISTORY_TABLE
) -> None:
    """Fold new events (each once) into their users' rows (see fold_statement), in one statement."""
    if not events:
        return
    query = sql.SQL("WITH new AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) "
                    "WITH ORDINALITY AS e({names})) {fold}").format(
        names=sql.SQL(", ").join(map(sql.Identifier, FOLD_SOURCE_COLUMNS)), fold=fold_statement("new", table)
    )  # fmt: skip
    conn.execute(query, [list(column) for column in zip(*events, strict=True)])


def item_popularity(conn: psycopg.Connection, table: str = schema.USER_HISTORY_TABLE) -> dict[str, float]:
    """How many users purchased, carted or positively viewed each item (weighted 3/2/1 like training)."""
    weights = {
        schema.HISTORY_PURCHASED: schema.POSITIVE_WEIGHTS[schema.PURCHASE],
        schema.HISTORY_CARTED: schema.POSITIVE_WEIGHTS[schema.CART],
        schema.HISTORY_VIEWED: schema.POSITIVE_WEIGHTS[schema.POSITIVE_VIEW],
    }
    parts = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT unnest({}) AS item, {}::float8 AS w FROM {}").format(
            sql.Identifier(column), sql.Literal(weight), sql.Identifier(table)
        )
        for column, weight in weights.items()
    )
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT item, sum(w) FROM ({}) AS p GROUP BY item").format(parts))
        return {item: float(score) for item, score in cur.fetchall()}
