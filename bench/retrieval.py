"""Retrieval: our two strategies (exact top-k over vectors loaded from pgvector; the HNSW table) vs Feast's
retrieve_online_documents_v2 vs plain numpy, on trained and random item vectors at 10k and 100k items.

Every figure of one case comes from the same run, on the same vectors and queries: latencies are single-query
(what the predictor does per request), recall is measured against numpy's exact top-k.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import RESULTS_DIR, Goal, Result, percentiles_ms, table
from bench.env import load_note, quick, workspace
from bench.fixtures import (
    QUICK_SIZES,
    FeastDocuments,
    copy_into_feast_view,
    fit_and_save,
    generate_data,
    random_vectors,
    tower_vectors,
    unit_rows,
)
from recsys import schema
from recsys.contract import DEFAULT_SIZES

K = 100
EF_SEARCH = (100, 200, 400, 800, 1000)  # pgvector returns at most ef rows: queries.hnsw_search raises ef to K
TARGET_RECALL = 0.99
GOAL_SPEEDUP = 50
TIE_TOLERANCE = 1e-5  # float32 scores within this of the k-th best count as ties
MODEL_EPOCHS = 3  # the vectors only need the shape a trained tower gives, not the best quality


@dataclass(frozen=True)
class Sizes:
    items: tuple[int, ...]
    queries: int  # timed queries per in-memory / HNSW method
    feast_queries: int  # Feast scans every row: ~63 ms a call at 100k
    feast_api_sample: int  # rows written through Feast's own API to measure its write rate


def sizes() -> Sizes:
    if quick():
        return Sizes(items=(400, 1500), queries=20, feast_queries=5, feast_api_sample=100)
    return Sizes(items=(10_000, 100_000), queries=100, feast_queries=20, feast_api_sample=2000)


def top_ids(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


class Truth:
    """numpy's exact scores for one query. Recall counts a returned item as correct when its exact score reaches
    the k-th best score (ties included): trained vectors of items the model never saw can coincide, and any
    of several equal items is a right answer."""

    def __init__(self, scores: np.ndarray, position: dict[str, int]):
        self.scores = scores
        self.position = position

    def recall(self, found: list[str] | np.ndarray, k: int) -> float:
        kth = np.partition(self.scores, len(self.scores) - k)[len(self.scores) - k]
        rows = [self.position[item_id] for item_id in dict.fromkeys(list(found)[:k])]
        return float(np.sum(self.scores[rows] >= kth - TIE_TOLERANCE)) / k


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def measure_case(conn, kind: str, ids: list[str], vectors: np.ndarray, queries: np.ndarray, sz: Sizes, feast) -> dict:
    """Publish the vectors (pgvector + Feast's table), then time and score every method on the same queries."""
    from recsys.retrieval import ExactRetriever
    from recsys.vector_index import queries as vector_queries
    from recsys.vector_index import tables, writes

    n = len(ids)
    table_name = f"bench_{kind}_{n}"
    version = f"bench-{kind}-{n}"
    id_array = np.asarray(ids)
    position = {item_id: row for row, item_id in enumerate(ids)}
    tables.ensure_item_table(conn, table_name)
    publish_s, upsert = timed(writes.upsert_vectors, conn, ids, vectors, version, table_name)
    feast_copy_s = copy_into_feast_view(schema.VIEW_ITEM_EMBEDDING, ids, vectors, version)

    # numpy exact: the reference answer, and a baseline (full sort of every score)
    numpy_s, numpy_found = [], []
    for q in queries:
        seconds, top = timed(lambda q=q: top_ids(vectors @ q, K))
        numpy_s.append(seconds)
        numpy_found.append(id_array[top])
    truth = [Truth(vectors @ q, position) for q in queries]

    load_s, (loaded_ids, matrix) = timed(vector_queries.load_vectors, conn, version, table_name)
    exact = ExactRetriever(matrix)
    loaded = np.asarray(loaded_ids)
    methods: dict[str, dict] = {}

    def score(name: str, seconds: list[float], found: list, recall_10: list[float] | None = None) -> None:
        r10 = recall_10 if recall_10 is not None else [t.recall(f, 10) for f, t in zip(found, truth, strict=False)]
        methods[name] = {
            **percentiles_ms(seconds),
            "recall@10": float(np.mean(r10)),
            "recall@100": float(np.mean([t.recall(f, K) for f, t in zip(found, truth, strict=False)])),
        }

    score("numpy exact (full sort)", numpy_s, numpy_found)
    exact_s, exact_found = [], []
    for q in queries:
        seconds, hits = timed(exact.search, q[None, :], K)
        exact_s.append(seconds)
        exact_found.append(loaded[hits[0][0]])
    score("exact in-memory (ours)", exact_s, exact_found)
    for ef in EF_SEARCH:
        hnsw_s, hnsw_found = [], []
        for q in queries:
            seconds, hits = timed(vector_queries.hnsw_search, conn, q, K, ef, version, table_name)
            hnsw_s.append(seconds)
            hnsw_found.append([item_id for item_id, _ in hits[0]])
        score(f"HNSW ef_search={ef} (ours)", hnsw_s, hnsw_found)
    feast_s, feast_found, feast_r10 = [], [], []
    for q, t in zip(queries[: sz.feast_queries], truth, strict=False):
        seconds, found = timed(feast.top_k, q, K)
        feast_s.append(seconds)
        feast_found.append(found)
        feast_r10.append(t.recall(feast.top_k(q, 10), 10))  # Feast's set is unordered: ask for 10 separately
    score("Feast retrieve_online_documents_v2", feast_s, feast_found, feast_r10)
    feast_p50 = methods["Feast retrieve_online_documents_v2"]["p50"]
    for m in methods.values():
        m["feast_p50_over_this_p50"] = feast_p50 / m["p50"]
    return {
        "kind": kind,
        "items": n,
        "publish": {
            "total_s": publish_s,
            "copy_s": upsert.copy_s,
            "copy_rows_per_s": upsert.copy_rows_per_s,
            "hnsw_build_s": upsert.index_build_s,
            "maintenance_work_mem": f"{tables.hnsw_build_memory_mb(n, vectors.shape[1])}MB",
            "load_into_memory_s": load_s,
            "feast_table_copy_s": feast_copy_s,
        },
        "methods": methods,
    }


def feast_api_rate(ids: list[str], vectors: np.ndarray) -> float:
    """Rows (entities) per second through Feast's own write_to_online_store, on a sample."""
    import pandas as pd

    from recsys import feature_store

    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame(
        {
            schema.ITEM_ID: ids,
            schema.ITEM_VECTOR: list(vectors),
            schema.MODEL_VERSION: "feast-api-sample",
            schema.EVENT_TIMESTAMP: now,
            schema.CREATED_TIMESTAMP: now,
        }
    )
    seconds, _ = timed(feature_store.write_embedding_view, schema.VIEW_ITEM_EMBEDDING, frame)
    return len(ids) / seconds


def train_model(root: Path) -> Path:
    data = generate_data(root / "data-default", **(QUICK_SIZES if quick() else DEFAULT_SIZES))
    return fit_and_save(data, root / "model-default", epochs=1 if quick() else MODEL_EPOCHS)


def query_vectors(kind: str, model_dir: Path, root: Path, n: int) -> np.ndarray:
    """Trained case: user-tower vectors of the default data's users (what serving queries with); random case:
    random unit vectors."""
    if kind == "random":
        return random_vectors(n, seed=7)
    import pandas as pd

    from recsys.model.artifacts import load_model

    data = root / "data-default"
    users = pd.read_parquet(data / schema.USERS_FILE).head(n)
    interactions = pd.read_parquet(data / schema.INTERACTIONS_FILE)
    return unit_rows(load_model(model_dir).encode_users(users, history=interactions))


def run() -> Result:
    started_under = load_note()
    from recsys import db, feature_store

    sz = sizes()
    cases = []
    with workspace("retrieval") as root:
        feature_store.apply()
        model_dir = train_model(root)
        feast = FeastDocuments(feature_store.get_store(), schema.VIEW_ITEM_EMBEDDING)
        with db.connect() as conn:
            for kind in ("trained", "random"):
                queries = query_vectors(kind, model_dir, root, sz.queries)
                for n in sz.items:
                    if kind == "trained":
                        ids, vectors = tower_vectors(model_dir, n, root / f"catalogue-{n}")
                    else:
                        ids, vectors = [f"item_{i:07d}" for i in range(n)], random_vectors(n)
                    print(f"   retrieval: {kind} vectors, {n} items", flush=True)
                    cases.append(measure_case(conn, kind, ids, vectors, queries, sz, feast))
            rate = feast_api_rate(ids[: sz.feast_api_sample], vectors[: sz.feast_api_sample])
    plot(cases, RESULTS_DIR / "retrieval.png")
    return Result(
        name="retrieval",
        title="Retrieval: exact in-memory and HNSW (pgvector) vs Feast retrieve_online_documents_v2",
        command="python -m bench retrieval",
        markdown=markdown(cases, rate, sz) + "\n\n" + started_under,
        goals=goals(cases),
        data={"cases": cases, "feast_api_rows_per_s": rate, "k": K, "queries": sz.queries},
    )


def best_hnsw(case: dict) -> tuple[str, dict]:
    """The fastest HNSW setting reaching the target recall, else the most accurate one."""
    hnsw = {name: m for name, m in case["methods"].items() if name.startswith("HNSW")}
    good = {name: m for name, m in hnsw.items() if m["recall@100"] >= TARGET_RECALL}
    if good:
        return min(good.items(), key=lambda item: item[1]["p50"])
    return max(hnsw.items(), key=lambda item: item[1]["recall@100"])


def goals(cases: list[dict]) -> list[Goal]:
    out = []
    largest = max(c["items"] for c in cases)
    for case in (c for c in cases if c["items"] == largest):
        exact = case["methods"]["exact in-memory (ours)"]
        speedup = exact["feast_p50_over_this_p50"]
        met = speedup >= GOAL_SPEEDUP and exact["recall@100"] >= TARGET_RECALL
        out.append(
            Goal(
                figure=f"exact in-memory vs Feast v2, {largest} {case['kind']} vectors",
                goal=f">= {GOAL_SPEEDUP}x faster, recall@100 >= {TARGET_RECALL}",
                measured=f"{speedup:.0f}x ({exact['p50']:.2f} vs "
                f"{case['methods']['Feast retrieve_online_documents_v2']['p50']:.1f} ms p50), "
                f"recall@100 {exact['recall@100']:.3f}",
                met=met,
                limited_by=""
                if met
                else f"one {largest}x64 matmul + argpartition per query in numpy "
                f"({exact['p50']:.2f} ms p50, p99 {exact['p99']:.1f} ms), on CPU cores shared with Postgres",
            )
        )
        name, hnsw = best_hnsw(case)
        met = hnsw["feast_p50_over_this_p50"] >= GOAL_SPEEDUP and hnsw["recall@100"] >= TARGET_RECALL
        limit = ""
        if not met and hnsw["recall@100"] < TARGET_RECALL:
            limit = (
                f"HNSW graph recall: best {hnsw['recall@100']:.3f} at {name.split()[1]} (pgvector caps ef_search "
                "at 1000)"
            )
        elif not met:
            limit = f"latency: {hnsw['p50']:.2f} ms p50 per SQL call (vector_index.queries.hnsw_search) at the needed ef_search"
        out.append(
            Goal(
                figure=f"HNSW vs Feast v2, {largest} {case['kind']} vectors",
                goal=f">= {GOAL_SPEEDUP}x faster, recall@100 >= {TARGET_RECALL}",
                measured=f"{hnsw['feast_p50_over_this_p50']:.0f}x at {name.split()[1]}, "
                f"recall@100 {hnsw['recall@100']:.3f}",
                met=met,
                limited_by=limit,
            )
        )
    return out


def markdown(cases: list[dict], feast_rate: float, sz: Sizes) -> str:
    rows = []
    for case in cases:
        for name, m in case["methods"].items():
            rows.append(
                [
                    f"{case['kind']} {case['items']}",
                    name,
                    m["n"],
                    m["p50"],
                    m["p99"],
                    m["recall@10"],
                    m["recall@100"],
                    f"{m['feast_p50_over_this_p50']:.1f}x",
                ]
            )
    publish_rows = [
        [
            f"{c['kind']} {c['items']}",
            c["publish"]["copy_s"],
            f"{c['publish']['copy_rows_per_s']:,.0f}",
            c["publish"]["hnsw_build_s"],
            c["publish"]["total_s"],
            c["publish"]["maintenance_work_mem"],
            c["publish"]["load_into_memory_s"],
            c["publish"]["feast_table_copy_s"],
        ]
        for c in cases
    ]
    return "\n".join(
        [
            f"Top-{K} for single queries (one call per query, as the predictor makes them); recall against numpy's "
            "exact scores on the same vectors (an item scoring at least the k-th best counts, so ties are right "
            f"answers). {sz.queries} queries per method, {sz.feast_queries} for Feast (it "
            "scans every row). Trained vectors: the item tower of a model trained for "
            f"{MODEL_EPOCHS} epochs on the default data, applied to a generated catalogue of that size with the "
            "product texts left out (MiniLM would need ~3 min for 100k texts); their queries are the user-tower "
            "vectors of the default data's users. Items the model never saw (at 100k all of them: ids are padded to "
            "the catalogue's size) go through the tower's out-of-vocabulary id, so their vectors come from category, "
            "price and rating alone: the cold-item case (an older model crowded them into near-duplicate clusters "
            "and HNSW recall@100 fell to 0.55; docs/scaling.md). Random vectors: uniform on the sphere (queries too), the hard "
            "case for an ANN graph. `Feast p50 / p50`: Feast's p50 divided by the method's p50, same run.",
            "",
            table(
                [
                    "case",
                    "method",
                    "queries",
                    "p50 ms",
                    "p99 ms",
                    "recall@10",
                    "recall@100",
                    "Feast p50 / p50",
                    "in Postgres ms",
                ],
                rows,
            ),  # fmt: skip
            "",
            "![recall vs latency](bench/results/retrieval.png)",
            "",
            "Publishing the vectors: binary COPY into the typed `vector(64)` table, then the HNSW (cosine) build, "
            "in one transaction (`vector_index.writes.upsert_vectors`); loading them back into memory for exact search. "
            "Feast's online table is filled by one COPY in exactly the row layout its postgres store writes "
            f"(a test checks it against rows Feast wrote itself): Feast's own `write_to_online_store` managed "
            f"{feast_rate:,.0f} entities/s on a {sz.feast_api_sample}-row sample in this run, which would have "
            "spent minutes on the 100k tables without changing what is measured.",
            "",
            table(
                [
                    "case",
                    "COPY s",
                    "COPY rows/s",
                    "HNSW build s",
                    "publish total s",
                    "maintenance_work_mem",
                    "load to memory s",
                    "Feast table COPY s",
                ],
                publish_rows,
            ),
        ]
    )


def plot(cases: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 3.8), sharey=True)
    for ax, case in zip(np.atleast_1d(axes), cases, strict=True):
        hnsw = [(m["p50"], m["recall@100"]) for name, m in case["methods"].items() if name.startswith("HNSW")]
        ax.plot(*zip(*hnsw, strict=True), "o-", label="HNSW (ef_search 100..1000)")
        for name, marker in (
            ("exact in-memory (ours)", "s"),
            ("numpy exact (full sort)", "^"),
            ("Feast retrieve_online_documents_v2", "x"),
        ):
            m = case["methods"][name]
            ax.plot(m["p50"], m["recall@100"], marker, markersize=9, label=name)
        ax.set_xscale("log")
        ax.set_title(f"{case['kind']} vectors, {case['items']:,} items")
        ax.set_xlabel("p50 latency per query (ms, log)")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(f"recall@{K} vs exact")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
