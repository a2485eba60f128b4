"""One point of the scale benchmark (bench/scale.py), in its own process so its peak RSS is its own.

`python -m bench.scale_point '{"n_items": .., "n_users": .., "n_interactions": .., "model_dir": .., ...}'` prints
the point's JSON as its last line. It runs in a private workspace (embedded Postgres, Feast repo copy) and measures,
in order: generation; item and user vectors from the already trained model; duplicate vectors; exact in-memory and
HNSW top-100 against numpy's exact scores (tie-aware recall); the pgvector publish (binary COPY, HNSW build); the
batch top-k per user; Feast materialization; the real predictor (startup, memory, latency) for each strategy.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from bench.common import percentiles_ms
from bench.env import workspace
from bench.fixtures import (
    SEED,
    TEXT_COLUMNS,
    copy_into_feast_table,
    copy_into_feast_view,
    generate_data,
    unit_rows,
)
from bench.retrieval import Truth
from bench.serve import load
from recsys import schema

K = 100
QUERIES = 100
EF_SEARCH = (100, 200, 400, 1000)  # 200: the predictor's default (ServingSettings.hnsw_ef_search)
PREDICTOR_READY_TIMEOUT_S = 900  # at 1M items the catalogue is read from Feast before the first answer
NEAR_DUPLICATE_COSINE = 0.999
CATALOGUE_VALUES = {  # item_features column -> (Value field, cast)
    schema.PRODUCT_NAME: ("string_val", str),
    schema.CATEGORY: ("string_val", str),
    schema.IMG_LINK: ("string_val", str),
    schema.STOCK_QUANTITY: ("int64_val", int),
    schema.ACTUAL_PRICE: ("double_val", float),
    schema.DISCOUNTED_PRICE: ("double_val", float),
}
INTERACTION_COLUMNS = [schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP, schema.INTERACTION_TYPE]


def catalogue_values(items: pd.DataFrame):
    """Per item, the Feast Values of the columns the predictor's catalogue reads (recsys.item_catalogue)."""
    from feast.protos.feast.types.Value_pb2 import Value

    for row in items.itertuples(index=False):
        yield {name: Value(**{kind: cast(getattr(row, name))}) for name, (kind, cast) in CATALOGUE_VALUES.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - started, out


def duplicate_stats(vectors: np.ndarray) -> dict:
    """Rows whose float32 bytes equal another row's: identical vectors (e.g. items sharing every input)."""
    rows = np.ascontiguousarray(vectors).view(np.dtype((np.void, vectors.dtype.itemsize * vectors.shape[1])))
    _, counts = np.unique(rows.ravel(), return_counts=True)
    return {
        "distinct": int(len(counts)),
        "rows_in_duplicate_groups": int(counts[counts > 1].sum()),
        "largest_group": int(counts.max()),
    }


def neighbour_stats(vectors: np.ndarray, queries: np.ndarray, sample: int = 200) -> dict:
    """How crowded the catalogue is: each sampled item's cosine to its nearest other item, how many items lie
    within cosine 0.999 of it (near-duplicates crowd an HNSW graph's neighbour lists), and how close the queries'
    best items are."""
    rows = np.random.default_rng(SEED).choice(len(vectors), min(sample, len(vectors)), replace=False)
    nearest, crowd = [], []
    for block in np.array_split(rows, max(1, len(rows) // 50)):
        sims = vectors[block] @ vectors.T
        sims[np.arange(len(block)), block] = -2.0
        nearest.extend(sims.max(axis=1).tolist())
        crowd.extend((sims > NEAR_DUPLICATE_COSINE).sum(axis=1).tolist())
    return {
        "nearest_cosine_median": float(np.median(nearest)),
        "near_duplicates_median": float(np.median(crowd)),
        "near_duplicates_max": int(np.max(crowd)),
        "query_best_cosine_median": float(np.median((queries @ vectors.T).max(axis=1))),
    }


def retrieval_figures(conn, ids: list[str], vectors: np.ndarray, queries: np.ndarray, version: str) -> dict:
    """Single-query latency and recall@100 of exact in-memory top-100 and of the HNSW query per ef_search."""
    from recsys.retrieval import ExactRetriever
    from recsys.vector_index import queries as vector_queries

    position = {item_id: row for row, item_id in enumerate(ids)}
    id_array = np.asarray(ids)
    truth = [Truth(vectors @ q, position) for q in queries]
    tied = [int(np.sum(t.scores >= np.sort(t.scores)[-K] - 1e-5)) for t in truth]
    exact = ExactRetriever(vectors)
    out: dict[str, dict] = {}
    seconds, found = [], []
    for q in queries:
        s, hits = timed(exact.search, q[None, :], K)
        seconds.append(s)
        found.append(id_array[hits[0][0]])
    out["exact"] = {**percentiles_ms(seconds), "recall@100": _recall(truth, found)}
    for ef in EF_SEARCH:
        seconds, found = [], []
        for q in queries:
            s, hits = timed(vector_queries.hnsw_search, conn, q, K, ef, version)
            seconds.append(s)
            found.append([item_id for item_id, _ in hits[0]])
        out[f"hnsw ef_search={max(ef, K)}"] = {**percentiles_ms(seconds), "recall@100": _recall(truth, found)}
    return {"methods": out, "items_at_or_above_100th_score_median": float(np.median(tied))}


def _recall(truth: list[Truth], found: list) -> float:
    return float(np.mean([t.recall(f, K) for f, t in zip(found, truth, strict=True)]))


def predictor_figures(model_dir: Path, root: Path, user_ids: list[str], strategy: str, seconds: float) -> dict:
    """Start the real predictor (`python -m serving`, one process) with a forced retrieval strategy: seconds until
    ready, its memory once ready, and closed-loop latency with 8 clients."""
    from recsys.predictor_process import running_predictor

    started = time.perf_counter()
    with running_predictor(
        model_dir,
        root / f"predictor-{strategy}.log",
        env={"RECSYS_SERVING_RETRIEVAL": strategy},
        ready_timeout_s=PREDICTOR_READY_TIMEOUT_S,
    ) as server:
        ready_s = time.perf_counter() - started
        procs = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
        rss_mb = sum(p.memory_info().rss for p in procs) / 2**20
        uss_mb = sum(p.memory_full_info().uss for p in procs) / 2**20
        measured = load(server.port, user_ids, clients=8, seconds=seconds)
    measured.pop("latencies_s")
    return {"ready_s": ready_s, "rss_mb": rss_mb, "uss_mb": uss_mb, **measured}


def served_strategies(n_items: int) -> list[str]:
    """The default strategy at this size, and HNSW next to exact where exact is the default (the predictor with
    exact retrieval over 1M items would spend minutes more loading only to be compared with what it does not use)."""
    from recsys.retrieval import choose_strategy

    return ["exact", "hnsw"] if choose_strategy("auto", n_items) == "exact" else ["hnsw"]


def measure_point(point: dict) -> dict:
    from recsys import db, feature_store, history
    from recsys.config import get_settings
    from recsys.model.artifacts import load_model
    from recsys.model.dataset import interaction_codes, items_per_user
    from recsys.publish import top_k_per_user
    from recsys.vector_index import registry, tables, writes

    n_items, n_users, n_interactions = point["n_items"], point["n_users"], point["n_interactions"]
    model_dir = Path(point["model_dir"])
    out: dict = {
        "n_items": n_items,
        "n_users": n_users,
        "n_interactions": n_interactions,
        "load_at_start": os.getloadavg()[0],
    }
    with workspace("scale") as root:
        data = get_settings().data_dir
        out["generate_s"], _ = timed(generate_data, data, n_users, n_items, n_interactions)
        out["rss_after_generate_mb"] = peak_rss_mb()
        items = pd.read_parquet(data / schema.ITEMS_FILE).drop(columns=list(TEXT_COLUMNS))
        users = pd.read_parquet(data / schema.USERS_FILE)
        interactions = pd.read_parquet(data / schema.INTERACTIONS_FILE, columns=INTERACTION_COLUMNS)
        ids, user_ids = items[schema.ITEM_ID].astype(str).tolist(), users[schema.USER_ID].astype(str).tolist()

        model = load_model(model_dir)
        version = model.model_version
        out["encode_items_s"], raw = timed(model.encode_items, items)
        vectors = unit_rows(raw)
        out["encode_users_s"], user_vectors = timed(model.encode_users, users, history=interactions)
        user_vectors = unit_rows(user_vectors)
        out["known_item_ids"] = int(sum(item_id in model.features.item_index for item_id in ids))
        out["duplicates"] = duplicate_stats(vectors)

        with db.connect() as conn:
            tables.ensure_item_table(conn)
            registry.register_model_version(conn, version)
            publish_s, upsert = timed(writes.upsert_vectors, conn, ids, vectors, version)
            out["publish"] = {
                "total_s": publish_s,
                "copy_s": upsert.copy_s,
                "hnsw_build_s": upsert.index_build_s,
                "maintenance_work_mem_mb": tables.hnsw_build_memory_mb(n_items, vectors.shape[1]),
                "build_workers": tables.HNSW_BUILD_WORKERS,
            }
            if point.get("history", True):
                out["history_write_s"], _ = timed(history.write_user_history, conn, interactions, replace=True)
            else:  # served with empty histories (the rewrite of 10M interactions alone outlasts the run here)
                history.ensure_history_table(conn)
            registry.set_live_model_version(conn, version)
            rng = np.random.default_rng(SEED)
            queries = user_vectors[rng.choice(len(user_vectors), QUERIES, replace=False)]
            out["retrieval"] = retrieval_figures(conn, ids, vectors, queries, version)
        out["neighbours"] = neighbour_stats(vectors, queries)

        topk_users = min(point["topk_users"], n_users)
        seen = items_per_user(*interaction_codes(interactions, pd.Index(user_ids), pd.Index(ids)), n_users)
        out["topk_s"], _ = timed(top_k_per_user, user_vectors[:topk_users], vectors, seen[:topk_users])
        out["topk_users"] = topk_users
        out["topk_s_per_100k_users"] = out["topk_s"] * 100_000 / topk_users
        del interactions, seen

        feature_store.apply()
        if point.get("materialize", True):
            out["materialize_s"], _ = timed(feature_store.materialize)
        else:  # Feast's local engine writes ~1k entities/s here: the catalogue columns go in by one COPY instead
            catalogue = pd.read_parquet(data / schema.ITEMS_FILE, columns=list(CATALOGUE_VALUES))
            out["catalogue_copy_s"] = copy_into_feast_table(schema.VIEW_ITEM_FEATURES, ids, catalogue_values(catalogue))
        out["feast_user_vectors_copy_s"] = copy_into_feast_view(
            schema.VIEW_USER_EMBEDDING, user_ids, user_vectors, version
        )
        out["peak_rss_before_serving_mb"] = peak_rss_mb()
        out["predictor"] = {
            strategy: predictor_figures(model_dir, root, user_ids, strategy, point["serve_seconds"])
            for strategy in served_strategies(n_items)
        }
    return out


if __name__ == "__main__":
    print(json.dumps(measure_point(json.loads(sys.argv[1]))))
