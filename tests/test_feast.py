"""The Feast repo against the real embedded Postgres: apply, materialize, online reads and writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from psycopg import sql
from typer.testing import CliRunner

from recsys import db, feature_store, schema
from recsys.cli import app

pytestmark = pytest.mark.integration

ONLINE_VIEWS = set(schema.FEATURE_VIEWS) - {schema.VIEW_INTERACTIONS}  # interactions: online only through pushes


def online_rows(store_project: str, view: str) -> list[tuple]:
    with db.connect() as conn, conn.cursor() as cur:
        table = sql.Identifier(f"{store_project}_{view}")
        cur.execute(sql.SQL("SELECT entity_key, feature_name, value, event_ts FROM {} ORDER BY 1, 2").format(table))
        return cur.fetchall()


def test_cli_apply_creates_extension_and_lists_what_it_deployed(pg_dsn: str, feature_repo_copy: Path) -> None:
    result = CliRunner().invoke(app, ["feast", "apply", "--repo", str(feature_repo_copy)])
    assert result.exit_code == 0, result.output
    for view in schema.FEATURE_VIEWS:
        assert f"feature view {view}" in result.output
    for name in (
        "entity user",
        "entity item",
        f"feature service {schema.SERVICE_USER_ONLINE}",
        f"feature service {schema.SERVICE_ITEM_ONLINE}",
        f"feature service {schema.SERVICE_TRAINING}",
    ):
        assert name in result.output
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'")
        assert cur.fetchone() == ("vector",)
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE %s", (f"{schema.FEAST_PROJECT}_%",)
        )
        tables = {row[0] for row in cur.fetchall()}
    assert {f"{schema.FEAST_PROJECT}_{view}" for view in ONLINE_VIEWS} <= tables


def test_cli_apply_without_a_repo_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["feast", "apply", "--repo", str(tmp_path)])
    assert result.exit_code == 2
    assert "no feature_store.yaml" in result.output


def test_materialize_round_trip_and_idempotent(pg_dsn: str, feature_repo_copy: Path) -> None:
    feature_store.apply(feature_repo_copy)
    counts = feature_store.materialize(feature_repo_copy)
    users = pd.read_parquet(feature_repo_copy / "data" / schema.USERS_FILE)
    items = pd.read_parquet(feature_repo_copy / "data" / schema.ITEMS_FILE)
    assert counts == {schema.VIEW_ITEM_FEATURES: len(items), schema.VIEW_USER_FEATURES: len(users)}

    store = feature_store.get_store(feature_repo_copy)
    future = items[items[schema.ARRIVAL_DATE] > pd.Timestamp.now(tz="UTC")]
    assert len(future), "the tiny data set should hold items that have not arrived yet"
    picked = pd.concat([items.iloc[[0, 7, -1]], future.iloc[:1]])
    item_columns = (
        schema.PRODUCT_NAME,
        schema.CATEGORY,
        schema.DISCOUNTED_PRICE,
        schema.STOCK_QUANTITY,
        schema.ARRIVAL_DATE,
    )
    online = store.get_online_features(
        features=[f"{schema.VIEW_ITEM_FEATURES}:{c}" for c in item_columns],
        entity_rows=[{schema.ITEM_ID: i} for i in picked[schema.ITEM_ID]],
    ).to_dict()
    for column in item_columns:
        assert list(pd.Series(online[column])) == list(picked[column]), column

    user_columns = (schema.PREFERENCES, schema.AGE, schema.GENDER)
    online = store.get_online_features(
        features=[f"{schema.VIEW_USER_FEATURES}:{c}" for c in user_columns],
        entity_rows=[{schema.USER_ID: u} for u in users[schema.USER_ID].iloc[[0, 42, -1]]],
    ).to_dict()
    for column in user_columns:
        assert online[column] == list(users[column].iloc[[0, 42, -1]]), column

    before = {view: online_rows(store.project, view) for view in feature_store.MATERIALIZED_VIEWS}
    assert feature_store.materialize(feature_repo_copy) == counts
    assert {view: online_rows(store.project, view) for view in feature_store.MATERIALIZED_VIEWS} == before


def test_write_embedding_view_round_trip(pg_dsn: str, feature_repo_copy: Path) -> None:
    feature_store.apply(feature_repo_copy)
    rng = np.random.default_rng(0)
    ids = ["i00001", "i00002", "i00003"]
    vectors = rng.normal(size=(len(ids), schema.EMBEDDING_DIM)).astype(np.float32)
    frame = pd.DataFrame(
        {
            schema.ITEM_ID: ids,
            schema.ITEM_VECTOR: list(vectors),
            schema.MODEL_VERSION: "v-test",
            schema.EVENT_TIMESTAMP: pd.Timestamp.now(tz="UTC"),
        }
    )
    assert feature_store.write_embedding_view(schema.VIEW_ITEM_EMBEDDING, frame, feature_repo_copy) == len(ids)

    online = (
        feature_store.get_store(feature_repo_copy)
        .get_online_features(
            features=[
                f"{schema.VIEW_ITEM_EMBEDDING}:{schema.ITEM_VECTOR}",
                f"{schema.VIEW_ITEM_EMBEDDING}:{schema.MODEL_VERSION}",
            ],
            entity_rows=[{schema.ITEM_ID: i} for i in reversed(ids)],
        )
        .to_dict()
    )
    np.testing.assert_allclose(np.array(online[schema.ITEM_VECTOR]), vectors[::-1], rtol=1e-6)
    assert online[schema.MODEL_VERSION] == ["v-test"] * len(ids)

    with pytest.raises(feature_store.FeatureStoreError, match="lacks columns"):
        feature_store.write_embedding_view(
            schema.VIEW_ITEM_EMBEDDING, frame.drop(columns=[schema.MODEL_VERSION]), feature_repo_copy
        )
    with pytest.raises(feature_store.FeatureStoreError, match="unknown feature view"):
        feature_store.write_embedding_view("no_such_view", frame, feature_repo_copy)


def test_materialize_before_apply_exits_2_with_a_hint(pg_dsn: str, feature_repo_copy: Path) -> None:
    result = CliRunner().invoke(app, ["feast", "materialize", "--repo", str(feature_repo_copy)])
    assert result.exit_code == 2
    assert "run `recsys feast apply` first" in " ".join(result.output.split())
