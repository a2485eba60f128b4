"""Reads of a vector table: one version's vectors in bulk, some items' vectors by id, the HNSW query."""

from __future__ import annotations

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format

from recsys import schema
from recsys.vector_index.tables import table_dim

HNSW_MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
ITERATIVE_SCAN_MIN_VERSION = (0, 8, 0)  # pgvector release that added hnsw.iterative_scan


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
    rows = _fetch_raw(conn, query, (model_version,))
    if not rows:
        return [], np.empty((0, dim), dtype=np.float32)
    return [item_id for item_id, _ in rows], _decode(rows, dim)


def read_vectors(
    conn: psycopg.Connection, item_ids: list[str], model_version: str, table: str = schema.ITEM_VECTOR_TABLE
) -> dict[str, np.ndarray]:
    """item_id -> float32 vector for those of `item_ids` the table holds in `model_version` (others absent)."""
    query = sql.SQL("SELECT {id}, {vec} FROM {t} WHERE {id} = ANY(%s) AND {v} = %s").format(
        id=sql.Identifier(schema.ITEM_ID),
        vec=sql.Identifier(schema.VECTOR_COLUMN),
        t=sql.Identifier(table),
        v=sql.Identifier(schema.MODEL_VERSION),
    )
    rows = _fetch_raw(conn, query, (item_ids, model_version))
    if not rows:
        return {}
    dim = int.from_bytes(rows[0][1][:2], "big", signed=True)
    return {str(item_id): vector for (item_id, _), vector in zip(rows, _decode(rows, dim), strict=True)}


def _fetch_raw(conn: psycopg.Connection, query: sql.Composed, params: tuple) -> list[tuple[str, bytes]]:
    """Rows (item_id, raw vector bytes): decoding them all in one numpy call beats a Python object per vector."""
    info = conn.adapters.types.get("vector")  # known when pgvector's adapters are registered (serving pool)
    vector_oid = info.oid if info is not None else conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]
    with conn.cursor(binary=True) as cur:
        cur.adapters.register_loader(vector_oid, _RawVectorLoader)
        return cur.execute(query, params).fetchall()


def _decode(rows: list[tuple[str, bytes]], dim: int) -> np.ndarray:
    record = np.dtype([("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,))])
    return np.frombuffer(b"".join(raw for _, raw in rows), dtype=record)["values"].astype(np.float32)


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
