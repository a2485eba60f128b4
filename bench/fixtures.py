"""What several benchmarks need: seeded data, a quickly trained model, tower vectors for any catalogue size, and a
bulk writer into Feast's own online table (Feast's `write_to_online_store` manages ~1-8k rows/s here).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psycopg import sql

from recsys import schema

QUICK_SIZES = {"n_users": 100, "n_items": 300, "n_interactions": 3000}
SEED = 42
TEXT_COLUMNS = (schema.PRODUCT_NAME, schema.ABOUT_PRODUCT)
BENCH_BLEND_WEIGHT = 0.5  # within the range validation picks on ML-100K (0.4-1.5)


def generate_data(out: Path, n_users: int, n_items: int, n_interactions: int, seed: int = SEED) -> Path:
    from recsys.data.generate import generate

    generate(n_users=n_users, n_items=n_items, n_interactions=n_interactions, seed=seed, out=out)
    return out


def training_hyperparameters(epochs: int):
    """`recsys train`'s recipe (Hyperparameters' defaults) with `epochs` epochs and no early stop."""
    from recsys.model.config import Hyperparameters

    return Hyperparameters(epochs=epochs, patience=epochs)


def fit_and_save(data_dir: Path, out_dir: Path, epochs: int) -> Path:
    """A model dir like `recsys train` writes, from the same training loop and defaults, without the baseline
    evaluation (EASE inverts an items x items matrix per lambda: most of a minute at 10k items) and without
    metrics.json: for benchmarks that need a trained model, not its quality.

    Its reranker holds cosine item-item weights (what training fits above rerank.EASE_MAX_ITEMS items) and a fixed
    blend weight instead of the validation-chosen EASE ones: the same NEIGHBOURS weights per item, so the same
    serving cost."""
    import torch

    from recsys.model.artifacts import save_model
    from recsys.model.config import model_config
    from recsys.model.dataset import make_split
    from recsys.model.distributed import Runtime
    from recsys.model.inputs import recent_positive_items
    from recsys.model.train import fit
    from recsys.model.training_data import read_training_data

    data = read_training_data(data_dir)
    hp = training_hyperparameters(epochs)
    parts = make_split(data.interactions, "temporal", SEED)
    result = fit(data, parts, hp, Runtime(torch.device("cpu")))
    save_model(
        out_dir,
        config=model_config(hp),
        features=result.features,
        user_tower=result.model.user_tower,
        item_tower=result.model.item_tower,
        recent_items=recent_positive_items(data.interactions),
        reranker=cosine_reranker(parts.train, result.features.item_ids),
    )
    return out_dir


def cosine_reranker(train: pd.DataFrame, item_ids: list[str]):
    """An ItemItemReranker over `item_ids` (the model's item index) from the train part's positive interactions."""
    from recsys.model.dataset import interaction_matrix
    from recsys.model.rerank import NEIGHBOURS, ItemItemReranker, item_item_weights

    items = pd.Index(item_ids)
    known = train[train[schema.ITEM_ID].astype(str).isin(items)]
    users = pd.Index(known[schema.USER_ID].astype(str).unique())
    weights = item_item_weights(interaction_matrix(known, users, items), "cosine", None, NEIGHBOURS)
    return ItemItemReranker(weights=weights, weight=BENCH_BLEND_WEIGHT, method="cosine", neighbours=NEIGHBOURS)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)


def random_vectors(n: int, dim: int = schema.EMBEDDING_DIM, seed: int = SEED) -> np.ndarray:
    """Unit vectors spread uniformly on the sphere: no clusters, the hard case for an ANN index."""
    return unit_rows(np.random.default_rng(seed).standard_normal((n, dim)))


def tower_vectors(model_dir: Path, n_items: int, work: Path, seed: int = SEED) -> tuple[list[str], np.ndarray]:
    """Item ids and item-tower vectors of a generated n-item catalogue, encoded by a trained model.

    The product texts are left out (the tower then sees a zero text vector): MiniLM encodes ~550 texts/s on 2
    cores, 3 minutes for 100k items. Ids, category path, prices and ratings still shape the vectors, so they
    cluster the way trained vectors do.
    """
    from recsys.model.artifacts import load_model

    data = generate_data(work, n_users=10, n_items=n_items, n_interactions=10, seed=seed)
    items = pd.read_parquet(data / schema.ITEMS_FILE).drop(columns=list(TEXT_COLUMNS))
    vectors = load_model(model_dir).encode_items(items)
    return items[schema.ITEM_ID].astype(str).tolist(), unit_rows(vectors)


def feast_table(view_name: str) -> str:
    """The Postgres table of a view in Feast's online store."""
    from feast.infra.online_stores.postgres_online_store.postgres import _table_id

    from recsys.feature_store import get_store

    store = get_store()
    return _table_id(store.project, store.get_feature_view(view_name))


def copy_into_feast_view(view_name: str, ids: list[str], vectors: np.ndarray, model_version: str) -> float:
    """Write (id, vector, model_version) rows into an embedding view's online table with one binary COPY, in
    exactly the row layout Feast's postgres `online_write_batch` produces (same entity-key serialisation, value
    protos and vector text); returns seconds. Existing rows of the table are replaced.

    tests/test_bench.py checks the layout against rows Feast wrote itself.
    """
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    from recsys.feature_store import get_store

    view = get_store().get_feature_view(view_name)
    vector_name = next(f.name for f in view.features if f.name != schema.MODEL_VERSION)
    version_value = Value(string_val=model_version)
    rows = ({vector_name: Value(float_list_val=FloatList(val=v.tolist())), schema.MODEL_VERSION: version_value}
            for v in vectors)  # fmt: skip
    return copy_into_feast_table(view_name, ids, rows)


def copy_into_feast_table(view_name: str, ids: list[str], features: Iterable[dict[str, Any]]) -> float:
    """Write one row per (entity, feature) of `features` (feature name -> Feast Value proto, one dict per id)
    into the view's online table with one COPY, replacing its rows; seconds taken."""
    import time

    from feast.infra.online_stores.postgres_online_store.postgres import (
        _to_naive_utc,
        extract_text_and_num,
        get_list_val_str,
        serialize_entity_key,
    )
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from recsys import db
    from recsys.feature_store import get_store

    store = get_store()
    view = store.get_feature_view(view_name)
    (join_key,) = view.join_keys
    key_version = store.config.entity_key_serialization_version
    now = _to_naive_utc(datetime.now(UTC))
    table = feast_table(view_name)
    started = time.perf_counter()
    with db.connect(autocommit=False) as conn:
        columns = [
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            )
        ]
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for item_id, values in zip(ids, features, strict=True):
                key = serialize_entity_key(
                    EntityKey(join_keys=[join_key], entity_values=[Value(string_val=item_id)]), key_version
                )
                for name, value in values.items():
                    text, number = extract_text_and_num(value, "value_num" in columns)
                    row = {
                        "entity_key": key,
                        "feature_name": name,
                        "value": value.SerializeToString(),
                        "value_text": text,
                        "value_num": number,
                        "vector_value": get_list_val_str(value),
                        "event_ts": now,
                        "created_ts": now,
                    }
                    copy.write_row([row[c] for c in columns])
        conn.commit()
    return time.perf_counter() - started


class FeastDocuments:
    """Feast's vector search (`retrieve_online_documents_v2`) over one embedding view: the replaced system's path.

    Feast 0.67 returns the right top-k rows in another order, with its id column not aligned with the other
    columns, so only the returned id set is used (recall); the call is timed as a client makes it."""

    def __init__(self, store, view_name: str):
        view = store.get_feature_view(view_name)
        vector_name = next(f.name for f in view.features if f.name != schema.MODEL_VERSION)
        self.store = store
        self.features = [f"{view_name}:{vector_name}"]
        (self.join_key,) = view.join_keys

    def top_k(self, query: np.ndarray, k: int) -> list[str]:
        response = self.store.retrieve_online_documents_v2(
            features=self.features, query=np.asarray(query, dtype=float).tolist(), top_k=k, distance_metric="cosine"
        ).to_dict()
        return [str(i) for i in response[self.join_key]]
