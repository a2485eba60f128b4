"""The vector tables themselves: create one (typed `vector(D)`), read its declared size, build its HNSW index."""

from __future__ import annotations

import time

import psycopg
from psycopg import sql

from recsys import schema
from recsys.vector_index.registry import ensure_registry

# pgvector's build slows several-fold once its graph outgrows maintenance_work_mem (it says so in a NOTICE, measured
# after 2159 tuples at 2MB: ~970 bytes per 64-d element at m=16, i.e. ~715 + 4 x dim), so a large table asks for
# its graph's size plus a quarter, up to a cap that a small database server can still grant.
HNSW_ELEMENT_OVERHEAD_BYTES = 715
HNSW_MAINTENANCE_WORK_MEM_MIN_MB = 512  # 100k x 64 built in 16 s at 512MB, 41 s at the 64MB default
HNSW_MAINTENANCE_WORK_MEM_MAX_MB = 4096
# parallel workers of the build (plus the leader); Postgres's default is 2, set explicitly so a server configured
# lower still builds in parallel: 100k x 64 took 66 s with 0, 50 s with 1, 38 s with 2 on the busy 2-core box
HNSW_BUILD_WORKERS = 2


def ensure_item_table(
    conn: psycopg.Connection, table: str = schema.ITEM_VECTOR_TABLE, dim: int = schema.EMBEDDING_DIM
) -> None:
    """Create the vector table (and the registry) if missing; an existing table of another size is an error.

    The HNSW index is built by the first `writes.upsert_vectors`, after its bulk load (far faster than
    inserting row by row into an index).
    """
    if dim < 1:
        raise ValueError(f"vector dimension must be positive, got {dim}")
    with conn.transaction():
        ensure_registry(conn)
        create_vector_table(conn, table, dim)
    existing = table_dim(conn, table)
    if existing != dim:
        raise ValueError(f"table {table} holds vector({existing}), not vector({dim})")


def create_vector_table(conn: psycopg.Connection, table: str, dim: int) -> None:
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


def hnsw_build_memory_mb(rows: int, dim: int) -> int:
    """maintenance_work_mem (MB) for building the HNSW graph of `rows` vectors of size `dim` in memory."""
    graph_mb = rows * (HNSW_ELEMENT_OVERHEAD_BYTES + 4 * dim) * 1.25 / 2**20
    return int(min(max(HNSW_MAINTENANCE_WORK_MEM_MIN_MB, graph_mb), HNSW_MAINTENANCE_WORK_MEM_MAX_MB))


def hnsw_index_name(table: str) -> str:
    return f"{table}_{schema.VECTOR_COLUMN}_hnsw"


def has_hnsw_index(conn: psycopg.Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (hnsw_index_name(table),)).fetchone()[0] is not None


def ensure_hnsw_index(conn: psycopg.Connection, table: str = schema.ITEM_VECTOR_TABLE) -> float | None:
    """Build the cosine HNSW index if missing (seconds taken), else None. Runs in the caller's transaction."""
    if has_hnsw_index(conn, table):
        return None
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    memory_mb = hnsw_build_memory_mb(int(rows), table_dim(conn, table) or 0)
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(f"{memory_mb}MB")))
        conn.execute(sql.SQL("SET LOCAL max_parallel_maintenance_workers = {}").format(sql.Literal(HNSW_BUILD_WORKERS)))
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw ({vec} vector_cosine_ops)").format(
                i=sql.Identifier(hnsw_index_name(table)),
                t=sql.Identifier(table),
                vec=sql.Identifier(schema.VECTOR_COLUMN),
            )
        )
    return time.perf_counter() - started
