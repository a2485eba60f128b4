"""Our own pgvector tables: typed `vector(D)`, HNSW (cosine), versioned COPY upserts, ANN queries.

Feast's online store keeps an untyped vector column that no ANN index can serve, so nearest-neighbour search
reads these tables instead. One table per kind of vector (64-d two-tower items, 384-d text), one row per item.

Versions: model_version is a content hash, so "newer" is defined by the order in which versions were first
written (MODEL_REGISTRY_TABLE.version_seq). A write never replaces a row of a newer version, and the live
version (what serving uses) is the one most recently made live with `set_live_model_version`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format

from recsys import schema

HNSW_MAINTENANCE_WORK_MEM = "512MB"  # 100k x 64 builds in 16 s (41 s at the 64MB default) on an idle 2-core box
REBUILD_SHARE = 0.2  # more rows than this share change -> rebuild table + index instead of merging
COPY_CHUNK_ROWS = 20_000  # rows per COPY write: bounds the bytes built in memory
HNSW_MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
ITERATIVE_SCAN_MIN_VERSION = (0, 8, 0)  # pgvector release that added hnsw.iterative_scan


class StaleModelVersionError(ValueError):
    """A write or live switch would replace a newer model_version with an older one."""


@dataclass(frozen=True)
class UpsertResult:
    written: int  # rows inserted or changed (0 when the same version is written again)
    deleted: int  # rows of older versions that the new set no longer holds
    copy_s: float
    copy_rows_per_s: float
    index_build_s: float | None  # None when the rows were merged into an existing HNSW index


# ------------------------------------------------------------------------------------------ tables
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


def ensure_item_table(
    conn: psycopg.Connection, table: str = schema.ITEM_VECTOR_TABLE, dim: int = schema.EMBEDDING_DIM
) -> None:
    """Create the vector table (and the registry) if missing; an existing table of another size is an error.

    The HNSW index is built by the first `upsert_vectors`, after its bulk load (far faster than inserting
    row by row into an index).
    """
    if dim < 1:
        raise ValueError(f"vector dimension must be positive, got {dim}")
    with conn.transaction():
        ensure_registry(conn)
        _create_vector_table(conn, table, dim)
    existing = table_dim(conn, table)
    if existing != dim:
        raise ValueError(f"table {table} holds vector({existing}), not vector({dim})")


def _create_vector_table(conn: psycopg.Connection, table: str, dim: int) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ({id} text PRIMARY KEY, {v} text NOT NULL,"
            " {vec} vector({dim}) NOT NULL, {at} timestamptz NOT NULL DEFAULT now())"
        ).format(
            t=sql.Identifier(table),
            id=sql.Identifier(schema.ITEM_ID),
            v=sql.Identifier(schema.MODEL_VERSION),
            vec=sql.Identifier(schema.VECTOR_COLUMN),
            dim=sql.Literal(dim),
            at=sql.Identifier(schema.VECTOR_UPDATED_AT),
        )
    )


def table_dim(conn: psycopg.Connection, table: str) -> int | None:
    """The declared size of the table's vector column, None when the table does not exist."""
    row = conn.execute(
        "SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
        (table, schema.VECTOR_COLUMN),
    ).fetchone()
    return None if row is None else int(row[0])


def hnsw_index_name(table: str) -> str:
    return f"{table}_{schema.VECTOR_COLUMN}_hnsw"


def ensure_hnsw_index(conn: psycopg.Connection, table: str = schema.ITEM_VECTOR_TABLE) -> float | None:
    """Build the cosine HNSW index if missing (seconds taken), else None. Runs in the caller's transaction."""
    name = hnsw_index_name(table)
    if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
        return None
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(HNSW_MAINTENANCE_WORK_MEM)))
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw ({vec} vector_cosine_ops)").format(
                i=sql.Identifier(name), t=sql.Identifier(table), vec=sql.Identifier(schema.VECTOR_COLUMN)
            )
        )
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------ versions
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


# ------------------------------------------------------------------------------------------ writes
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
        raise ValueError(f"table {table} does not exist: call ensure_item_table first")
    array = validate_vectors(list(item_ids), vectors, dim)
    with conn.transaction():
        sequence = register_model_version(conn, model_version)
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(table)))
        newer = _newest_other_version(conn, table, sequence)
        if newer is not None:
            raise StaleModelVersionError(f"{table} holds model {newer}, newer than {model_version}; nothing written")
        copy_s = _copy_into_temp_table(conn, list(item_ids), array, dim)
        changed = _count_changed_rows(conn, table, model_version)
        has_index = conn.execute("SELECT to_regclass(%s)", (hnsw_index_name(table),)).fetchone()[0] is not None
        if has_index and changed > REBUILD_SHARE * len(array):
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
    _create_vector_table(conn, shadow, dim)
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


# ------------------------------------------------------------------------------------------ reads
class _RawVectorLoader(Loader):
    """Keep pgvector's binary form (int16 dim, int16 unused, dim x float32 big-endian) for one numpy decode."""

    format = Format.BINARY

    def load(self, data: memoryview | bytes) -> bytes:
        return bytes(data)


def load_vectors(
    conn: psycopg.Connection, model_version: str, table: str = schema.ITEM_VECTOR_TABLE
) -> tuple[list[str], np.ndarray]:
    """All (item_id, vector) rows of one version, sorted by item_id, as ids and a float32 [n, dim] array."""
    dim = table_dim(conn, table)
    if dim is None:
        raise ValueError(f"table {table} does not exist")
    query = sql.SQL("SELECT {id}, {vec} FROM {t} WHERE {v} = %s ORDER BY {id}").format(
        id=sql.Identifier(schema.ITEM_ID),
        vec=sql.Identifier(schema.VECTOR_COLUMN),
        t=sql.Identifier(table),
        v=sql.Identifier(schema.MODEL_VERSION),
    )
    with conn.cursor(binary=True) as cur:
        vector_oid = conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]
        cur.adapters.register_loader(vector_oid, _RawVectorLoader)
        rows = cur.execute(query, (model_version,)).fetchall()
    if not rows:
        return [], np.empty((0, dim), dtype=np.float32)
    record = np.dtype([("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,))])
    decoded = np.frombuffer(b"".join(raw for _, raw in rows), dtype=record)
    return [item_id for item_id, _ in rows], decoded["values"].astype(np.float32)


def hnsw_search(
    conn: psycopg.Connection,
    queries: np.ndarray,
    k: int,
    ef_search: int = 100,
    model_version: str | None = None,
    table: str = schema.ITEM_VECTOR_TABLE,
) -> list[list[tuple[str, float]]]:
    """Approximate top-k by cosine similarity (1 - cosine distance) for each query row, best first.

    ef_search is raised to k (pgvector returns at most ef_search rows). Filtering by model_version uses
    pgvector's relaxed iterative scan where available, so a filter does not starve the result.
    """
    array = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    dim = table_dim(conn, table)
    if dim is None:
        raise ValueError(f"table {table} does not exist")
    if array.shape[1] != dim or not np.isfinite(array).all():
        raise ValueError(f"queries must be finite [n, {dim}] vectors, got shape {list(array.shape)}")
    if not 1 <= k <= HNSW_MAX_EF_SEARCH:
        raise ValueError(f"k must be between 1 and {HNSW_MAX_EF_SEARCH}, got {k}")
    if len(array) == 0:
        return []
    where = (
        sql.SQL("WHERE {v} = %(v)s").format(v=sql.Identifier(schema.MODEL_VERSION)) if model_version else sql.SQL("")
    )
    query = sql.SQL("SELECT {id}, 1 - ({vec} <=> %(q)s) FROM {t} {where} ORDER BY {vec} <=> %(q)s LIMIT %(k)s").format(
        id=sql.Identifier(schema.ITEM_ID),
        vec=sql.Identifier(schema.VECTOR_COLUMN),
        t=sql.Identifier(table),
        where=where,
    )
    results: list[list[tuple[str, float]]] = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(min(max(ef_search, k), HNSW_MAX_EF_SEARCH)))
        )
        if model_version and _supports_iterative_scan(conn):
            cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        params = [{"q": row, "k": k, "v": model_version} for row in array]
        cur.executemany(query, params, returning=True)
        while True:
            # relaxed_order may return neighbours slightly out of order: sort each result by similarity
            hits = sorted(((str(i), float(s)) for i, s in cur.fetchall()), key=lambda hit: -hit[1])
            results.append(hits)
            if not cur.nextset():
                break
    return results


def _supports_iterative_scan(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        return False
    version = tuple(int(part) for part in str(row[0]).split(".")[:3] if part.isdigit())
    return version >= ITERATIVE_SCAN_MIN_VERSION
