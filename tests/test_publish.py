"""publish on the real embedded Postgres and a real Feast repo, after a real (tiny, 1-epoch) training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import torch

from recsys import db, feature_store, publish, schema
from recsys.vector_index import queries, registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recsys.model.config import Hyperparameters
    from recsys.model.train import train

    return train(tiny_data, tmp_path_factory.mktemp("model") / "model", Hyperparameters(epochs=1))


def perturbed_copy(model_dir: Path, out: Path) -> str:
    """Another valid model dir (item tower weights nudged), so its content-hash model_version differs."""
    from recsys.model.artifacts import load_model, save_model

    model = load_model(model_dir)
    with torch.no_grad():
        for parameter in model.item_tower.parameters():
            parameter.add_(0.01)
    return save_model(
        out,
        config=model.config,
        features=model.features,
        user_tower=model.user_tower,
        item_tower=model.item_tower,
        recent_items=model.recent_items,
    )


def database_state(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    state = {}
    for table in (schema.ITEM_VECTOR_TABLE, schema.TEXT_VECTOR_TABLE, schema.MODEL_REGISTRY_TABLE):
        query = psycopg.sql.SQL("SELECT * FROM {} ORDER BY 1").format(psycopg.sql.Identifier(table))
        state[table] = [tuple(str(v) for v in row) for row in conn.execute(query).fetchall()]
    return state


def online(repo: Path, view: str, feature_names: list[str], key: str, ids: list[str]) -> dict[str, list]:
    store = feature_store.get_store(repo)
    refs = [f"{view}:{name}" for name in feature_names]
    return store.get_online_features(features=refs, entity_rows=[{key: i} for i in ids]).to_dict()


def reset_database() -> None:
    with db.connect() as conn:
        for table in (schema.ITEM_VECTOR_TABLE, schema.TEXT_VECTOR_TABLE, schema.MODEL_REGISTRY_TABLE):
            conn.execute(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(psycopg.sql.Identifier(table)))


def test_top_k_per_user_excludes_history_and_sorts() -> None:
    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    items = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    columns, scores = publish.top_k_per_user(users, items, [np.array([0]), np.array([0, 1, 2])], k=4)
    assert columns.tolist() == [[1, 2, -1, -1], [-1, -1, -1, -1]]
    assert scores[0, :2].tolist() == pytest.approx([0.8, 0.0]) and np.isneginf(scores[1]).all()


def test_publish_twice_gives_one_consistent_state_in_pgvector_and_feast(
    pg_dsn: str, model_dir: Path, feature_repo_copy: Path
) -> None:
    from recsys.model.artifacts import load_model

    reset_database()
    feature_store.apply(feature_repo_copy)
    first = publish.publish(model_dir, repo=feature_repo_copy)
    with db.connect() as conn:
        state = database_state(conn)
    files = {Path(f).name: pd.read_parquet(f) for f in first.files}
    second = publish.publish(model_dir, repo=feature_repo_copy)

    model = load_model(model_dir)
    version = model.model_version
    assert first.live_model_version == second.live_model_version == version
    assert (second.item_vectors.written, second.text_vectors.written) == (0, 0)
    with db.connect() as conn:
        assert database_state(conn) == state
        assert registry.live_model_version(conn) == version
        item_ids, stored = queries.load_vectors(conn, version)
        text_ids, _ = queries.load_vectors(conn, version, table=schema.TEXT_VECTOR_TABLE)
    for name, frame in files.items():
        pd.testing.assert_frame_equal(pd.read_parquet(feature_repo_copy / "data" / name), frame)
        assert (frame[schema.MODEL_VERSION] == version).all()

    items = pd.read_parquet(feature_repo_copy / "data" / schema.ITEMS_FILE)
    expected = dict(zip(items[schema.ITEM_ID], model.encode_items(items), strict=True))
    assert item_ids == text_ids == sorted(expected)
    np.testing.assert_allclose(stored, np.stack([expected[i] for i in item_ids]), atol=1e-6)

    some_items, some_users = item_ids[:5], files[schema.USER_ITEMS_FILE][schema.USER_ID].tolist()[:5]
    item_rows = online(
        feature_repo_copy,
        schema.VIEW_ITEM_EMBEDDING,
        [schema.ITEM_VECTOR, schema.MODEL_VERSION],
        schema.ITEM_ID,
        some_items,
    )
    np.testing.assert_allclose(np.array(item_rows[schema.ITEM_VECTOR]), stored[:5], atol=1e-6)
    text_rows = online(
        feature_repo_copy,
        schema.VIEW_ITEM_TEXT_EMBEDDING,
        [schema.TEXT_VECTOR, schema.MODEL_VERSION],
        schema.ITEM_ID,
        some_items,
    )
    assert np.array(text_rows[schema.TEXT_VECTOR]).shape == (5, schema.TEXT_EMBEDDING_DIM)
    user_rows = online(
        feature_repo_copy,
        schema.VIEW_USER_EMBEDDING,
        [schema.USER_VECTOR, schema.MODEL_VERSION],
        schema.USER_ID,
        some_users,
    )
    assert np.allclose(np.linalg.norm(np.array(user_rows[schema.USER_VECTOR]), axis=1), 1.0, atol=1e-5)
    top_rows = online(
        feature_repo_copy,
        schema.VIEW_USER_ITEMS,
        [schema.TOP_K_ITEM_IDS, schema.TOP_K_SCORES, schema.MODEL_VERSION],
        schema.USER_ID,
        some_users,
    )
    for rows in (item_rows, text_rows, user_rows, top_rows):
        assert rows[schema.MODEL_VERSION] == [version] * 5

    interactions = pd.read_parquet(feature_repo_copy / "data" / schema.INTERACTIONS_FILE)
    for user_id, top_ids, top_scores in zip(
        some_users, top_rows[schema.TOP_K_ITEM_IDS], top_rows[schema.TOP_K_SCORES], strict=True
    ):
        seen = set(interactions.loc[interactions[schema.USER_ID] == user_id, schema.ITEM_ID])
        assert len(top_ids) == schema.USER_ITEMS_TOP_K and not seen & set(top_ids)
        assert top_scores == sorted(top_scores, reverse=True)


def test_an_older_model_never_replaces_a_newer_one(
    pg_dsn: str, model_dir: Path, feature_repo_copy: Path, tmp_path: Path
) -> None:
    reset_database()
    feature_store.apply(feature_repo_copy)
    publish.publish(model_dir, repo=feature_repo_copy)
    newer = perturbed_copy(model_dir, tmp_path / "newer")
    report = publish.publish(tmp_path / "newer", repo=feature_repo_copy)
    assert report.live_model_version == newer and report.item_vectors.written == report.items
    with db.connect() as conn:
        state = database_state(conn)
    files = sorted((p.name, p.stat().st_mtime_ns) for p in (feature_repo_copy / "data").glob("*.parquet"))

    with pytest.raises(registry.StaleModelVersionError, match=f"older than the live model {newer}"):
        publish.publish(model_dir, repo=feature_repo_copy)
    with db.connect() as conn:
        assert database_state(conn) == state
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (feature_repo_copy / "data").glob("*.parquet")) == files
    rows = online(
        feature_repo_copy,
        schema.VIEW_ITEM_EMBEDDING,
        [schema.MODEL_VERSION],
        schema.ITEM_ID,
        [str(pd.read_parquet(feature_repo_copy / "data" / schema.ITEMS_FILE)[schema.ITEM_ID].iloc[0])],
    )
    assert rows[schema.MODEL_VERSION] == [newer]
