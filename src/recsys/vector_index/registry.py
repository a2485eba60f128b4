"""The model registry: every model_version ever written, in write order, and the live one.

model_version is a content hash, so "newer" is defined by the order in which versions were first written
(MODEL_REGISTRY_TABLE.version_seq). The live version (what serving uses) is the one most recently made live
with `set_live_model_version`; it never goes back to an older version, except through a deliberate rollback
(`move_to_newest`, then publish again).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from recsys import schema


class StaleModelVersionError(ValueError):
    """A write or live switch would replace a newer model_version with an older one."""


def ensure_registry(conn: psycopg.Connection) -> None:
    """The model registry: one row per model_version ever written, in write order."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ({v} text PRIMARY KEY, {seq} bigint GENERATED ALWAYS AS IDENTITY UNIQUE,"
            " {reg} timestamptz NOT NULL DEFAULT now(), {live} timestamptz)"
        ).format(
            t=sql.Identifier(schema.MODEL_REGISTRY_TABLE),
            v=sql.Identifier(schema.MODEL_VERSION),
            seq=sql.Identifier(schema.REGISTRY_SEQUENCE),
            reg=sql.Identifier(schema.REGISTERED_AT),
            live=sql.Identifier(schema.LIVE_SINCE),
        )
    )


def register_model_version(conn: psycopg.Connection, version: str) -> int:
    """The version's place in write order, registering it on first sight."""
    if not version:
        raise ValueError("model_version must be a non-empty string")
    ensure_registry(conn)
    params = {"v": version}
    query = sql.SQL("INSERT INTO {t} ({v}) VALUES (%(v)s) ON CONFLICT ({v}) DO NOTHING").format(
        t=sql.Identifier(schema.MODEL_REGISTRY_TABLE), v=sql.Identifier(schema.MODEL_VERSION)
    )
    conn.execute(query, params)
    return version_sequence(conn, version)


def version_sequence(conn: psycopg.Connection, version: str) -> int | None:
    """The version's place in write order (higher = newer), None when it was never registered."""
    row = _registry_row(conn, version, schema.REGISTRY_SEQUENCE)
    return None if row is None else int(row)


def registered_at(conn: psycopg.Connection, version: str) -> datetime | None:
    """When the version was first registered (the event time publish stamps on its rows)."""
    return _registry_row(conn, version, schema.REGISTERED_AT)


def _registry_row(conn: psycopg.Connection, version: str, column: str) -> Any:
    if conn.execute("SELECT to_regclass(%s)", (schema.MODEL_REGISTRY_TABLE,)).fetchone()[0] is None:
        return None
    query = sql.SQL("SELECT {c} FROM {t} WHERE {v} = %s").format(
        c=sql.Identifier(column), t=sql.Identifier(schema.MODEL_REGISTRY_TABLE), v=sql.Identifier(schema.MODEL_VERSION)
    )
    row = conn.execute(query, (version,)).fetchone()
    return None if row is None else row[0]


def is_older_than_live(conn: psycopg.Connection, version: str) -> str | None:
    """The live version when it is newer than `version` (publishing `version` would go backwards), else None."""
    live = live_model_version(conn)
    if live is None or live == version:
        return None
    sequence = version_sequence(conn, version)
    return live if sequence is not None and version_sequence(conn, live) > sequence else None


def live_model_version(conn: psycopg.Connection) -> str | None:
    """The version serving should use; None before anything was made live (or the registry exists)."""
    if conn.execute("SELECT to_regclass(%s)", (schema.MODEL_REGISTRY_TABLE,)).fetchone()[0] is None:
        return None
    query = sql.SQL("SELECT {v} FROM {t} WHERE {live} IS NOT NULL ORDER BY {live} DESC, {seq} DESC LIMIT 1").format(
        v=sql.Identifier(schema.MODEL_VERSION),
        t=sql.Identifier(schema.MODEL_REGISTRY_TABLE),
        live=sql.Identifier(schema.LIVE_SINCE),
        seq=sql.Identifier(schema.REGISTRY_SEQUENCE),
    )
    row = conn.execute(query).fetchone()
    return None if row is None else str(row[0])


def set_live_model_version(conn: psycopg.Connection, version: str) -> None:
    """Make `version` live. Already live: nothing changes. Older than the live one: StaleModelVersionError."""
    with conn.transaction():
        sequence = register_model_version(conn, version)
        current = live_model_version(conn)
        if current == version:
            return
        if current is not None and version_sequence(conn, current) > sequence:
            raise StaleModelVersionError(f"model {version} is older than the live model {current}")
        query = sql.SQL("UPDATE {t} SET {live} = clock_timestamp() WHERE {v} = %s").format(
            t=sql.Identifier(schema.MODEL_REGISTRY_TABLE),
            live=sql.Identifier(schema.LIVE_SINCE),
            v=sql.Identifier(schema.MODEL_VERSION),
        )
        conn.execute(query, (version,))


def move_to_newest(conn: psycopg.Connection, version: str) -> None:
    """A deliberate rollback: give an already registered version a fresh, newest place in write order (and a
    new registration time), so publishing it again may replace the rows of the versions written after it."""
    query = sql.SQL("UPDATE {t} SET {seq} = DEFAULT, {reg} = now() WHERE {v} = %s").format(
        t=sql.Identifier(schema.MODEL_REGISTRY_TABLE),
        seq=sql.Identifier(schema.REGISTRY_SEQUENCE),
        reg=sql.Identifier(schema.REGISTERED_AT),
        v=sql.Identifier(schema.MODEL_VERSION),
    )
    with conn.transaction():
        if version_sequence(conn, version) is None:
            raise ValueError(f"model {version} was never published: publish it instead of rolling back to it")
        conn.execute(query, (version,))
