"""Publish a trained model: vectors to pgvector and Feast, batch top-k per user, then switch the live version.

Order (so serving never sees a half-written version): everything is computed and validated first; then the
offline parquet files, the Feast online views and the text vector table are written; last, in ONE database
transaction, the item vectors are upserted into their pgvector table, the user history is rebuilt (the data
set plus the logged events it lacks) and the live model_version is switched. Every row carries the same
model_version and the same event time (when that version was first registered), so publishing twice leaves the
same state.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from recsys import db, schema
from recsys.config import get_settings
from recsys.model.dataset import interaction_codes, items_per_user, read_dataset
from recsys.vector_index import registry, tables, writes

TOP_K_USER_CHUNK = 1024  # users per score block at most
# floats per score block (128 MB): at 1M items 1024 users would hold 4 GB of scores, and argpartition copies them
TOP_K_BLOCK_FLOATS = 2**25

OFFLINE_FILES = {
    schema.VIEW_ITEM_EMBEDDING: schema.ITEM_EMBEDDING_FILE,
    schema.VIEW_USER_EMBEDDING: schema.USER_EMBEDDING_FILE,
    schema.VIEW_ITEM_TEXT_EMBEDDING: schema.ITEM_TEXT_EMBEDDING_FILE,
    schema.VIEW_USER_ITEMS: schema.USER_ITEMS_FILE,
}


@dataclass(frozen=True)
class PublishReport:
    model_version: str
    live_model_version: str | None
    items: int
    users: int
    item_vectors: writes.UpsertResult
    text_vectors: writes.UpsertResult
    history_users: int
    feast_rows: dict[str, int]  # view name -> rows written to the online store
    files: list[str]  # offline parquet files written
    timings_s: dict[str, float] = field(default_factory=dict)


def top_k_per_user(
    user_vectors: np.ndarray, item_vectors: np.ndarray, exclude: list[np.ndarray], k: int = schema.USER_ITEMS_TOP_K
) -> tuple[np.ndarray, np.ndarray]:
    """Best k item columns and their scores per user (dot product, best first), excluded items never chosen.

    Returns int64 [n_users, k] columns and float32 scores; where a user has fewer than k candidates the tail
    holds column -1 and score -inf.
    """
    n_users, n_items = len(user_vectors), len(item_vectors)
    depth = min(k, n_items)
    columns = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    chunk = max(1, min(TOP_K_USER_CHUNK, TOP_K_BLOCK_FLOATS // max(n_items, 1)))
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        block = user_vectors[start:stop] @ item_vectors.T
        lengths = [len(exclude[u]) for u in range(start, stop)]
        if sum(lengths):
            block[np.repeat(np.arange(stop - start), lengths), np.concatenate(exclude[start:stop])] = -np.inf
        top = np.argpartition(-block, depth - 1, axis=1)[:, :depth] if depth < n_items else np.argsort(-block, axis=1)
        top_scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
        top[~np.isfinite(top_scores)] = -1
        columns[start:stop, :depth], scores[start:stop, :depth] = top, top_scores
    return columns, scores


def publish(model_dir: Path, data_dir: Path | None = None, repo: Path | None = None) -> PublishReport:
    """Publish the model in `model_dir` for the users/items/interactions in `data_dir` (default: the Feast
    repo's data folder). Raises StaleModelVersionError, with nothing written, when a newer model is live."""
    from recsys import feature_store, history, text
    from recsys.events.log import fold_events_missing_from
    from recsys.model.artifacts import load_model

    timings: dict[str, float] = {}
    started = time.perf_counter()
    settings = get_settings()
    if data_dir is None:
        data_dir = Path(repo) / "data" if repo is not None else settings.data_dir
    data_dir = Path(data_dir)
    repo = Path(repo) if repo is not None else settings.feature_repo
    model = load_model(model_dir)
    version = model.model_version
    data = read_dataset(data_dir)
    user_ids = data.users[schema.USER_ID].tolist()
    item_ids = data.items[schema.ITEM_ID].tolist()
    timings["load_s"] = time.perf_counter() - started

    mark = time.perf_counter()
    item_vectors = writes.validate_vectors(item_ids, model.encode_items(data.items), schema.EMBEDDING_DIM)
    user_vectors = writes.validate_vectors(
        user_ids, model.encode_users(data.users, history=data.interactions), schema.EMBEDDING_DIM
    )
    text_vectors = writes.validate_vectors(
        item_ids, text.encode_texts(text.item_texts(data.items)), schema.TEXT_EMBEDDING_DIM
    )
    timings["encode_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    seen = items_per_user(*interaction_codes(data.interactions, pd.Index(user_ids), pd.Index(item_ids)), len(user_ids))
    top_columns, top_scores = top_k_per_user(user_vectors, item_vectors, seen)
    timings["top_k_s"] = time.perf_counter() - mark

    with db.connect() as conn:
        newer_live = registry.is_older_than_live(conn, version)
        if newer_live is not None:
            raise registry.StaleModelVersionError(f"model {version} is older than the live model {newer_live}")
        event_time = _version_event_time(conn, version)
        frames = {
            schema.VIEW_ITEM_EMBEDDING: _vector_frame(schema.ITEM_ID, item_ids, schema.ITEM_VECTOR, item_vectors),
            schema.VIEW_USER_EMBEDDING: _vector_frame(schema.USER_ID, user_ids, schema.USER_VECTOR, user_vectors),
            schema.VIEW_ITEM_TEXT_EMBEDDING: _vector_frame(schema.ITEM_ID, item_ids, schema.TEXT_VECTOR, text_vectors),
            schema.VIEW_USER_ITEMS: _user_items_frame(user_ids, item_ids, top_columns, top_scores),
        }
        for frame in frames.values():
            _stamp(frame, version, event_time)

        mark = time.perf_counter()
        files = [str(_write_parquet(frame, data_dir / OFFLINE_FILES[view])) for view, frame in frames.items()]
        timings["parquet_s"] = time.perf_counter() - mark
        feast_rows = {}
        for view, frame in frames.items():
            mark = time.perf_counter()
            feature_store.write_embedding_view(view, frame, repo=repo)
            feast_rows[view] = len(frame)
            timings[f"feast_{view}_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        tables.ensure_item_table(conn, schema.ITEM_VECTOR_TABLE, schema.EMBEDDING_DIM)
        tables.ensure_item_table(conn, schema.TEXT_VECTOR_TABLE, schema.TEXT_EMBEDDING_DIM)
        # the text table first, on its own: its index (re)build must not hold the item table's swap lock
        text_result = writes.upsert_vectors(conn, item_ids, text_vectors, version, schema.TEXT_VECTOR_TABLE)
        with conn.transaction():
            item_result = writes.upsert_vectors(conn, item_ids, item_vectors, version, schema.ITEM_VECTOR_TABLE)
            history_users = history.write_user_history(conn, _with_interaction_type(data.interactions), replace=True)
            if schema.INTERACTION_ID in data.interactions.columns:  # events logged after this data set stay online
                fold_events_missing_from(conn, data.interactions[schema.INTERACTION_ID].dropna().astype(str))
            registry.set_live_model_version(conn, version)  # last: serving switches only when all is written
        timings["pgvector_s"] = time.perf_counter() - mark
        live = registry.live_model_version(conn)
    timings["total_s"] = time.perf_counter() - started
    return PublishReport(
        model_version=version,
        live_model_version=live,
        items=len(item_ids),
        users=len(user_ids),
        item_vectors=item_result,
        text_vectors=text_result,
        history_users=history_users,
        feast_rows=feast_rows,
        files=files,
        timings_s=timings,
    )


def _version_event_time(conn: psycopg.Connection, version: str) -> datetime:
    """When this version was first registered: the event time of all its rows, stable across re-publishes."""
    with conn.transaction():
        registry.register_model_version(conn, version)
        return registry.registered_at(conn, version)


def _vector_frame(id_column: str, ids: list[str], vector_column: str, vectors: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({id_column: pd.array(ids, dtype="string"), vector_column: list(vectors.astype(np.float32))})


def _user_items_frame(
    user_ids: list[str], item_ids: list[str], columns: np.ndarray, scores: np.ndarray
) -> pd.DataFrame:
    ids = np.asarray(item_ids, dtype=object)
    valid = columns >= 0
    return pd.DataFrame(
        {
            schema.USER_ID: pd.array(user_ids, dtype="string"),
            schema.TOP_K_ITEM_IDS: [ids[row[mask]].tolist() for row, mask in zip(columns, valid, strict=True)],
            schema.TOP_K_SCORES: [row[mask].astype(np.float32) for row, mask in zip(scores, valid, strict=True)],
        }
    )


def _stamp(frame: pd.DataFrame, version: str, event_time: datetime) -> None:
    frame[schema.MODEL_VERSION] = pd.array([version] * len(frame), dtype="string")
    frame[schema.EVENT_TIMESTAMP] = pd.Timestamp(event_time).tz_convert("UTC")
    frame[schema.CREATED_TIMESTAMP] = frame[schema.EVENT_TIMESTAMP]


def _write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write then rename, so readers (Feast materialize) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def _with_interaction_type(interactions: pd.DataFrame) -> pd.DataFrame:
    # files without interaction_type count every interaction as a positive view (see dataset.positive_mask)
    if schema.INTERACTION_TYPE in interactions.columns:
        return interactions
    return interactions.assign(**{schema.INTERACTION_TYPE: schema.POSITIVE_VIEW})
