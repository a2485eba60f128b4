"""pgvector tables on the real (embedded) PostgreSQL: typed column, HNSW, versioned upserts, ANN quality."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from recsys import db, schema
from recsys.vector_index import queries as vector_queries
from recsys.vector_index import registry, tables, writes

pytestmark = pytest.mark.integration
DIM = 16
TABLE = "test_vectors"
ROWS_SQL = (
    f"SELECT {schema.ITEM_ID}, {schema.MODEL_VERSION}, {schema.VECTOR_COLUMN}::text, {schema.VECTOR_UPDATED_AT}"
    f" FROM {TABLE} ORDER BY 1"
)


@pytest.fixture()
def conn(pg_dsn: str) -> Iterator[psycopg.Connection]:
    """A connection whose tables (test table and model registry) live in a private schema, dropped afterwards."""
    connection = db.connect()
    connection.execute("DROP SCHEMA IF EXISTS test_index CASCADE")
    connection.execute("CREATE SCHEMA test_index")
    connection.execute("SET search_path = test_index, public")
    tables.ensure_item_table(connection, TABLE, DIM)
    yield connection
    connection.execute("DROP SCHEMA test_index CASCADE")
    connection.close()


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ids(n: int) -> list[str]:
    return [f"item-{i:05d}" for i in range(n)]


def table_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(ROWS_SQL).fetchall()


def test_table_has_typed_vector_column_and_hnsw_index_used_by_ann_query(conn: psycopg.Connection) -> None:
    result = writes.upsert_vectors(conn, ids(2000), unit_vectors(2000), "v1", table=TABLE)
    assert result.written == 2000 and result.index_build_s is not None
    column_type = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
        (TABLE, schema.VECTOR_COLUMN),
    ).fetchone()[0]
    assert column_type == f"vector({DIM})"
    index_def = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (tables.hnsw_index_name(TABLE),)
    ).fetchone()[0]
    assert "USING hnsw" in index_def and "vector_cosine_ops" in index_def
    plan = "\n".join(
        row[0]
        for row in conn.execute(
            f"EXPLAIN SELECT {schema.ITEM_ID} FROM {TABLE} ORDER BY {schema.VECTOR_COLUMN} <=> %s LIMIT 10",
            (unit_vectors(1)[0],),
        ).fetchall()
    )
    assert tables.hnsw_index_name(TABLE) in plan
    with pytest.raises(ValueError, match=r"holds vector\(16\), not vector\(64\)"):
        tables.ensure_item_table(conn, TABLE, 64)


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.where(np.arange(DIM) == 3, np.nan, unit_vectors(3)), "NaN or inf"),
        (np.where(np.arange(DIM) == 0, np.inf, unit_vectors(3)), "NaN or inf"),
        (unit_vectors(3) * np.array([[1.0], [0.0], [1.0]], dtype=np.float32), "'item-00001' is all zeros"),
        (unit_vectors(3, dim=DIM + 1), r"shape \[n, 16\]"),
    ],
    ids=["nan", "inf", "zero", "wrong-dim"],
)
def test_bad_vectors_are_rejected_and_nothing_is_written(
    conn: psycopg.Connection, vectors: np.ndarray, message: str
) -> None:
    writes.upsert_vectors(conn, ids(3), unit_vectors(3, seed=5), "v1", table=TABLE)
    before = table_rows(conn)
    with pytest.raises(ValueError, match=message):
        writes.upsert_vectors(conn, ids(3), vectors, "v2", table=TABLE)
    assert table_rows(conn) == before
    registered = f"SELECT count(*) FROM {schema.MODEL_REGISTRY_TABLE} WHERE {schema.MODEL_VERSION} = 'v2'"
    assert conn.execute(registered).fetchone()[0] == 0


def test_upsert_twice_leaves_the_same_state(conn: psycopg.Connection) -> None:
    vectors = unit_vectors(50)
    writes.upsert_vectors(conn, ids(50), vectors, "v1", table=TABLE)
    first = table_rows(conn)
    again = writes.upsert_vectors(conn, ids(50), vectors, "v1", table=TABLE)
    assert (again.written, again.deleted, again.index_build_s) == (0, 0, None)
    assert table_rows(conn) == first
    loaded_ids, loaded = vector_queries.load_vectors(conn, "v1", table=TABLE)
    assert loaded_ids == ids(50)
    np.testing.assert_array_equal(loaded, vectors)


def hnsw_plan(conn: psycopg.Connection) -> str:
    """The ANN query's plan with seq scans priced out (a few dozen rows would not pick the index otherwise)."""
    query = f"EXPLAIN SELECT {schema.ITEM_ID} FROM {TABLE} ORDER BY {schema.VECTOR_COLUMN} <=> %s LIMIT 10"
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        return "\n".join(row[0] for row in conn.execute(query, (unit_vectors(1)[0],)).fetchall())


def test_new_version_rebuilds_table_and_index_and_drops_items_it_no_longer_has(conn: psycopg.Connection) -> None:
    writes.upsert_vectors(conn, ids(50), unit_vectors(50), "v1", table=TABLE)
    result = writes.upsert_vectors(conn, ids(40), unit_vectors(40, seed=1), "v2", table=TABLE)
    assert (result.written, result.deleted) == (40, 10) and result.index_build_s is not None  # rebuilt
    rows = table_rows(conn)
    assert {row[1] for row in rows} == {"v2"} and [row[0] for row in rows] == ids(40)
    assert tables.hnsw_index_name(TABLE) in hnsw_plan(conn)
    assert conn.execute("SELECT to_regclass(%s)", (f"{TABLE}_next",)).fetchone()[0] is None


def test_a_few_changed_rows_are_merged_into_the_live_index(conn: psycopg.Connection) -> None:
    writes.upsert_vectors(conn, ids(50), unit_vectors(50), "v1", table=TABLE)
    before = {row[0]: row for row in table_rows(conn)}
    vectors = np.concatenate([unit_vectors(50), unit_vectors(2, seed=9)])
    result = writes.upsert_vectors(conn, ids(52), vectors, "v1", table=TABLE)
    assert (result.written, result.deleted, result.index_build_s) == (2, 0, None)
    after = {row[0]: row for row in table_rows(conn)}
    assert len(after) == 52 and all(after[i] == before[i] for i in ids(50))  # untouched rows keep updated_at
    assert tables.hnsw_index_name(TABLE) in hnsw_plan(conn)


def test_older_version_never_overwrites_a_newer_one(conn: psycopg.Connection) -> None:
    writes.upsert_vectors(conn, ids(20), unit_vectors(20), "old", table=TABLE)
    writes.upsert_vectors(conn, ids(20), unit_vectors(20, seed=1), "new", table=TABLE)
    state = table_rows(conn)
    with pytest.raises(registry.StaleModelVersionError, match="holds model new, newer than old"):
        writes.upsert_vectors(conn, ids(30), unit_vectors(30, seed=2), "old", table=TABLE)
    assert table_rows(conn) == state


def test_live_version_switches_forward_only(conn: psycopg.Connection) -> None:
    assert registry.live_model_version(conn) is None
    registry.register_model_version(conn, "a")
    registry.set_live_model_version(conn, "b")
    assert registry.live_model_version(conn) == "b"
    with pytest.raises(registry.StaleModelVersionError, match="model a is older than the live model b"):
        registry.set_live_model_version(conn, "a")
    registry.set_live_model_version(conn, "b")  # idempotent
    registry.set_live_model_version(conn, "c")
    assert registry.live_model_version(conn) == "c"


def test_hnsw_top10_matches_exact_search_on_clustered_vectors(conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(7)
    centres = unit_vectors(40, seed=8)
    vectors = centres[rng.integers(40, size=5000)] + 0.15 * rng.normal(size=(5000, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writes.upsert_vectors(conn, ids(5000), vectors, "v1", table=TABLE)
    queries = vectors[rng.choice(5000, 100, replace=False)] + 0.05 * rng.normal(size=(100, DIM)).astype(np.float32)
    found = vector_queries.hnsw_search(conn, queries, k=10, ef_search=100, model_version="v1", table=TABLE)
    normalised = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact = np.argsort(-(normalised @ vectors.T), axis=1)[:, :10]
    same = [{item for item, _ in hits} == {ids(5000)[j] for j in row} for hits, row in zip(found, exact, strict=True)]
    assert np.mean(same) >= 0.95
    best = found[0][0]
    assert best[1] == pytest.approx(float(normalised[0] @ vectors[ids(5000).index(best[0])]), abs=1e-4)
    assert all(len(hits) == 10 and hits == sorted(hits, key=lambda h: -h[1]) for hits in found)
    assert vector_queries.hnsw_search(conn, queries[:2], k=5, model_version="other", table=TABLE) == [[], []]
