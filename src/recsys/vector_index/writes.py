"""Versioned writes into a vector table: validation, then one binary-COPY upsert per model version.

A write never replaces a row of a newer version (registry order), and writing the same version again
changes nothing.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from recsys import schema
from recsys.vector_index.registry import StaleModelVersionError, register_model_version
from recsys.vector_index.tables import (
    create_vector_table,
    ensure_hnsw_index,
    has_hnsw_index,
    hnsw_index_name,
    table_dim,
)

REBUILD_SHARE = 0.2  # more rows than this share change -> rebuild table + index instead of merging
COPY_CHUNK_ROWS = 20_000  # rows per COPY write: bounds the bytes built in memory


@dataclass(frozen=True)
class UpsertResult:
    written: int  # rows inserted or changed (0 when the same version is written again)
    deleted: int  # rows of older versions that the new set no longer holds
    copy_s: float
    copy_rows_per_s: float
    index_build_s: float | None  # None when the rows were merged into an existing HNSW index


def validate_vectors(item_ids: Sequence[str], vectors: np.ndarray, dim: int) -> np.ndarray:
    """float32 [n, dim] after checking shape, ids, finiteness and non-zero norms; ValueError names the row."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"vectors must have shape [n, {dim}], got {list(array.shape)}")
    if len(item_ids) != array.shape[0]:
        raise ValueError(f"{len(item_ids)} item ids for {array.shape[0]} vectors")
    if any(not isinstance(i, str) or not i for i in item_ids):
        raise ValueError("item ids must be non-empty strings")
    if len(set(item_ids)) != len(item_ids):
        raise ValueError("item ids must be unique")
    array = array.astype(np.float32)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(f"vector of item {item_ids[int(np.argmax(bad))]!r} holds NaN or inf ({int(bad.sum())} rows)")
    zero = np.linalg.norm(array, axis=1) == 0
    if zero.any():
        raise ValueError(f"vector of item {item_ids[int(np.argmax(zero))]!r} is all zeros ({int(zero.sum())} rows)")
    return array


def upsert_vectors(
    conn: psycopg.Connection,
    item_ids: Sequence[str],
    vectors: np.ndarray,
    model_version: str,
    table: str = schema.ITEM_VECTOR_TABLE,
) -> UpsertResult:
    """Write one model version's vectors in one transaction, never replacing a newer version's rows.

    Binary COPY into a temp table, then either one INSERT ... ON CONFLICT DO UPDATE (skipping rows whose
    stored version is newer or that are unchanged) plus a DELETE of the rows of older versions that this set
    no longer holds, or, when the HNSW index exists and more than REBUILD_SHARE of the rows change, a shadow
    table that gets the new rows and a fresh index and then replaces the table (inserting many rows into a
    live HNSW index one by one is ~10x slower than building it). The index is built after the first load.
    Concurrent writers wait for each other; readers are only held up by the final swap, until commit.

    Bad vectors, a missing table or a version older than the table's rows -> error, nothing written.
    Writing the same version again changes nothing.
    """
    dim = table_dim(conn, table)
    if dim is None:
        raise ValueError(f"table {table} does not exist: call tables.ensure_item_table first")
    array = validate_vectors(list(item_ids), vectors, dim)
    with conn.transaction():
        sequence = register_model_version(conn, model_version)
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(table)))
        newer = _newest_other_version(conn, table, sequence)
        if newer is not None:
            raise StaleModelVersionError(f"{table} holds model {newer}, newer than {model_version}; nothing written")
        copy_s = _copy_into_temp_table(conn, list(item_ids), array, dim)
        changed = _count_changed_rows(conn, table, model_version)
        if has_hnsw_index(conn, table) and changed > REBUILD_SHARE * len(array):
            deleted, index_build_s = _replace_table_from_temp_table(conn, table, model_version, dim)
            written = changed
        else:
            written = _merge_from_temp_table(conn, table, model_version, sequence)
            deleted = _delete_older_versions(conn, table, model_version)
            index_build_s = ensure_hnsw_index(conn, table)
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(_STAGE)))  # another upsert may follow
        # fresh statistics: without them the planner may pick a sequential scan over the HNSW index
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return UpsertResult(written, deleted, copy_s, len(array) / max(copy_s, 1e-9), index_build_s)


_STAGE = "recsys_vector_stage"  # temp table of one upsert


def _copy_into_temp_table(conn: psycopg.Connection, item_ids: list[str], array: np.ndarray, dim: int) -> float:
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {s} ({id} text, {vec} vector({dim}))").format(
            s=sql.Identifier(_STAGE),
            id=sql.Identifier(schema.ITEM_ID),
            vec=sql.Identifier(schema.VECTOR_COLUMN),
            dim=sql.Literal(dim),
        )
    )
    started = time.perf_counter()
    copy_sql = sql.SQL("COPY {s} ({id}, {vec}) FROM STDIN (FORMAT BINARY)").format(
        s=sql.Identifier(_STAGE), id=sql.Identifier(schema.ITEM_ID), vec=sql.Identifier(schema.VECTOR_COLUMN)
    )
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.write(_COPY_HEADER)
        for start in range(0, len(item_ids), COPY_CHUNK_ROWS):
            copy.write(
                _binary_copy_rows(item_ids[start : start + COPY_CHUNK_ROWS], array[start : start + COPY_CHUNK_ROWS])
            )
        copy.write(_COPY_TRAILER)
    return time.perf_counter() - started


# PostgreSQL's binary COPY framing: signature, flags, header extension length ... rows ... -1 field count
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_ROW_START = struct.Struct(">hi")  # field count (2), byte length of the item id


def _binary_copy_rows(item_ids: list[str], array: np.ndarray) -> bytes:
    """Rows (text item_id, vector) in binary COPY form; the vector fields are laid out by numpy in one go
    (psycopg's write_row adapts each value in Python: ~3x slower)."""
    dim = array.shape[1]
    vector_fields = np.empty(
        len(array), dtype=[("length", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,))]
    )
    vector_fields["length"] = 4 + 4 * dim  # pgvector's binary form: int16 dim, int16 unused, dim x float4
    vector_fields["dim"] = dim
    vector_fields["unused"] = 0
    vector_fields["values"] = array
    packed = memoryview(vector_fields.tobytes())
    stride = vector_fields.itemsize
    parts: list[bytes | memoryview] = []
    for row, item_id in enumerate(item_ids):
        encoded = item_id.encode("utf-8")
        parts += (_ROW_START.pack(2, len(encoded)), encoded, packed[row * stride : (row + 1) * stride])
    return b"".join(parts)


def _count_changed_rows(conn: psycopg.Connection, table: str, version: str) -> int:
    query = sql.SQL(
        "SELECT count(*) FROM {s} LEFT JOIN {t} stored USING ({id})"
        " WHERE (stored.{v}, stored.{vec}) IS DISTINCT FROM (%s, {s}.{vec})"
    ).format(
        s=sql.Identifier(_STAGE),
        t=sql.Identifier(table),
        id=sql.Identifier(schema.ITEM_ID),
        v=sql.Identifier(schema.MODEL_VERSION),
        vec=sql.Identifier(schema.VECTOR_COLUMN),
    )
    return int(conn.execute(query, (version,)).fetchone()[0])


def _replace_table_from_temp_table(
    conn: psycopg.Connection, table: str, version: str, dim: int
) -> tuple[int, float | None]:
    """Build `<table>_next` from the staged rows (unchanged rows keep updated_at), index it, swap it in.

    Returns (rows dropped from the old table, HNSW build seconds).
    """
    shadow = f"{table}_next"
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(shadow)))
    create_vector_table(conn, shadow, dim)
    names = {
        "n": sql.Identifier(shadow),
        "t": sql.Identifier(table),
        "s": sql.Identifier(_STAGE),
        "id": sql.Identifier(schema.ITEM_ID),
        "v": sql.Identifier(schema.MODEL_VERSION),
        "vec": sql.Identifier(schema.VECTOR_COLUMN),
        "at": sql.Identifier(schema.VECTOR_UPDATED_AT),
    }
    conn.execute(
        sql.SQL(
            "INSERT INTO {n} ({id}, {v}, {vec}, {at}) SELECT {s}.{id}, %(v)s, {s}.{vec},"
            " CASE WHEN (stored.{v}, stored.{vec}) IS NOT DISTINCT FROM (%(v)s, {s}.{vec}) THEN stored.{at}"
            " ELSE now() END FROM {s} LEFT JOIN {t} stored USING ({id})"
        ).format(**names),
        {"v": version},
    )
    dropped_query = sql.SQL(
        "SELECT count(*) FROM {t} stored WHERE NOT EXISTS (SELECT 1 FROM {s} WHERE {s}.{id} = stored.{id})"
    ).format(**names)
    dropped = int(conn.execute(dropped_query).fetchone()[0])
    build_s = ensure_hnsw_index(conn, shadow)
    conn.execute(sql.SQL("DROP TABLE {t}").format(**names))
    conn.execute(sql.SQL("ALTER TABLE {n} RENAME TO {t}").format(**names))
    for old_name, new_name in ((hnsw_index_name(shadow), hnsw_index_name(table)), (f"{shadow}_pkey", f"{table}_pkey")):
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(old_name), sql.Identifier(new_name)))
    return dropped, build_s


def _merge_from_temp_table(conn: psycopg.Connection, table: str, version: str, sequence: int) -> int:
    # rows whose stored version is newer (a concurrent publish) stay; identical rows are not rewritten, so
    # publishing the same version twice leaves every row (and its updated_at) untouched
    query = sql.SQL(
        "INSERT INTO {t} AS stored ({id}, {v}, {vec}, {at}) SELECT {id}, %(v)s, {vec}, now() FROM {s}"
        " ON CONFLICT ({id}) DO UPDATE SET {v} = EXCLUDED.{v}, {vec} = EXCLUDED.{vec}, {at} = EXCLUDED.{at}"
        " WHERE (stored.{v}, stored.{vec}) IS DISTINCT FROM (EXCLUDED.{v}, EXCLUDED.{vec})"
        " AND COALESCE((SELECT r.{seq} FROM {r} r WHERE r.{v} = stored.{v}), 0) <= %(seq)s"
    ).format(
        t=sql.Identifier(table),
        s=sql.Identifier(_STAGE),
        r=sql.Identifier(schema.MODEL_REGISTRY_TABLE),
        id=sql.Identifier(schema.ITEM_ID),
        v=sql.Identifier(schema.MODEL_VERSION),
        vec=sql.Identifier(schema.VECTOR_COLUMN),
        at=sql.Identifier(schema.VECTOR_UPDATED_AT),
        seq=sql.Identifier(schema.REGISTRY_SEQUENCE),
    )
    return conn.execute(query, {"v": version, "seq": sequence}).rowcount


def _delete_older_versions(conn: psycopg.Connection, table: str, version: str) -> int:
    # after the merge every row of this set carries `version`; any other row is an item the new set dropped
    query = sql.SQL("DELETE FROM {t} WHERE {v} <> %s").format(
        t=sql.Identifier(table), v=sql.Identifier(schema.MODEL_VERSION)
    )
    return conn.execute(query, (version,)).rowcount


def _newest_other_version(conn: psycopg.Connection, table: str, sequence: int) -> str | None:
    query = sql.SQL(
        "SELECT r.{v} FROM {r} r WHERE r.{seq} > %s AND EXISTS (SELECT 1 FROM {t} x WHERE x.{v} = r.{v})"
        " ORDER BY r.{seq} DESC LIMIT 1"
    ).format(
        v=sql.Identifier(schema.MODEL_VERSION),
        r=sql.Identifier(schema.MODEL_REGISTRY_TABLE),
        seq=sql.Identifier(schema.REGISTRY_SEQUENCE),
        t=sql.Identifier(table),
    )
    row = conn.execute(query, (sequence,)).fetchone()
    return None if row is None else str(row[0])
