"""The scale benchmark's figures: which series get an exponent, where exact and HNSW cross, the markdown, the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import table
from bench.scaling import exponent

SERIES = {  # label -> how to read it from a point
    "generate": lambda p: p["generate_s"],
    "generation peak RSS (MB)": lambda p: p["rss_after_generate_mb"],
    "encode items": lambda p: p["encode_items_s"],
    "COPY": lambda p: p["publish"]["copy_s"],
    "HNSW build": lambda p: p["publish"]["hnsw_build_s"],
    "exact top-100 p50 (ms)": lambda p: p["retrieval"]["methods"]["exact"]["p50"],
    "HNSW top-100 p50, ef_search 200 (ms)": lambda p: p["retrieval"]["methods"]["hnsw ef_search=200"]["p50"],
    "batch top-k, 100k users": lambda p: p["topk_s_per_100k_users"],
    "Feast materialize": lambda p: p["materialize_s"],
    "history rewrite": lambda p: p["history_write_s"],
    "predictor ready (exact)": lambda p: p["predictor"]["exact"]["ready_s"],
    "predictor ready (HNSW)": lambda p: p["predictor"]["hnsw"]["ready_s"],
    "predictor RSS, exact (MB)": lambda p: p["predictor"]["exact"]["rss_mb"],
    "predictor RSS, HNSW (MB)": lambda p: p["predictor"]["hnsw"]["rss_mb"],
    "predictor p99, exact (ms)": lambda p: p["predictor"]["exact"]["latency_ms"]["p99"],
    "predictor p99, HNSW (ms)": lambda p: p["predictor"]["hnsw"]["latency_ms"]["p99"],
}


def value(label: str, point: dict) -> float | None:
    """The series' figure at this point; None where the point did not measure it (e.g. exact serving at 1M)."""
    try:
        return SERIES[label](point)
    except KeyError:
        return None


def exponents(measured: list[dict]) -> dict[str, float]:
    """Fitted over the points that measured the series (at least two, all positive), else NaN."""
    out = {}
    for label in SERIES:
        pairs = [(p["n_items"], v) for p in measured if (v := value(label, p)) is not None]
        fits = len(pairs) > 1 and all(v > 0 for _, v in pairs)
        out[label] = exponent([n for n, _ in pairs], [v for _, v in pairs]) if fits else float("nan")
    return out


def cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def crossing(measured: list[dict], fits: dict[str, float]) -> float | None:
    """Items where the fitted exact and HNSW (ef_search 200) p50 lines meet (None when they do not cross ahead)."""
    a, b = SERIES["exact top-100 p50 (ms)"], SERIES["HNSW top-100 p50, ef_search 200 (ms)"]
    ea, eb = fits["exact top-100 p50 (ms)"], fits["HNSW top-100 p50, ef_search 200 (ms)"]
    if not np.isfinite(ea) or not np.isfinite(eb) or ea == eb:
        return None
    last = measured[-1]
    # a(n) = a_last (n/n_last)^ea = b_last (n/n_last)^eb  ->  n = n_last (b_last/a_last)^(1/(ea-eb))
    return float(last["n_items"] * (b(last) / a(last)) ** (1 / (ea - eb)))


def markdown(d: dict) -> str:
    pts = d["points"]
    cols = [f"{p['n_items']:,} items" for p in pts]
    steps = [[label, *(cell(value(label, p)) for p in pts), f"{d['exponents'][label]:.2f}"] for label in SERIES]
    methods = list(pts[0]["retrieval"]["methods"])
    recall = [
        [m, *(f"{p['retrieval']['methods'][m]['recall@100']:.3f} / {p['retrieval']['methods'][m]['p50']:.2f} / "
              f"{p['retrieval']['methods'][m]['p99']:.2f}" for p in pts)]
        for m in methods
    ]  # fmt: skip
    vectors = [
        [f"{p['n_items']:,}", f"{p['known_item_ids']:,}", f"{p['duplicates']['distinct']:,}",
         p["duplicates"]["rows_in_duplicate_groups"], p["duplicates"]["largest_group"],
         p["retrieval"]["items_at_or_above_100th_score_median"], f"{p['neighbours']['nearest_cosine_median']:.4f}",
         p["neighbours"]["near_duplicates_median"], p["neighbours"]["near_duplicates_max"],
         f"{p['neighbours']['query_best_cosine_median']:.3f}"]
        for p in pts
    ]  # fmt: skip
    serving = [
        [f"{p['n_items']:,}", s, f"{v['ready_s']:.0f}", f"{v['rss_mb']:.0f}", f"{v['uss_mb']:.0f}",
         f"{v['latency_ms']['p50']:.1f}", f"{v['latency_ms']['p99']:.1f}", f"{v['rps']:.0f}", v["errors"]]
        for p in pts
        for s, v in p["predictor"].items()
    ]  # fmt: skip
    publish = [
        [f"{p['n_items']:,}", f"{p['publish']['copy_s']:.2f}", f"{p['n_items'] / p['publish']['copy_s']:,.0f}",
         f"{p['publish']['hnsw_build_s']:.1f}", f"{p['publish']['maintenance_work_mem_mb']}MB",
         p["publish"]["build_workers"], cell(p.get("history_write_s")), cell(p.get("materialize_s")),
         cell(p.get("catalogue_copy_s")),
         f"{p['topk_users']:,}", f"{p['topk_s']:.1f}"]
        for p in pts
    ]  # fmt: skip
    cross = d["exact_hnsw_crossing_items"]
    cross_text = f"{cross:,.0f} items" if cross else "no crossing within the fitted range"
    train = d["train_data"]
    return "\n".join(
        [
            f"Sizes: items as the columns, {pts[-1]['n_users']:,} users, interactions "
            + ", ".join(f"{p['n_interactions']:,}" for p in pts)
            + " (10 per item). The exponents are per item (interactions grow with them). "
            "Vectors: one model trained with the default recipe "
            f"({d['train_epochs']} epochs, full softmax) on a generated {train['n_users']:,} users / "
            f"{train['n_items']:,} items / {train['n_interactions']:,} interactions, then applied to each point's own "
            "generated catalogue (product texts left out, as in the retrieval section) and users (with their "
            "generated histories): item ids beyond the trained ones go through the out-of-vocabulary id. "
            "Each point runs in its own process and its own embedded Postgres; the exponent is the slope of "
            "log(time) against log(items) over the points.",
            "",
            table(["step (s unless noted)", *cols, "exponent"], steps),
            "",
            f"Exact and HNSW (ef_search 200) p50 lines cross at {cross_text}; serving switches from exact to HNSW "
            f"above {d['exact_max_items']:,} items (`recsys.retrieval.EXACT_MAX_ITEMS`, `RECSYS_SERVING_RETRIEVAL=auto`).",
            "",
            "Top-100 per single query, 100 user-tower queries: recall@100 / p50 ms / p99 ms. Recall is tie-aware "
            "(an item counts when its exact score reaches the exact 100th score).",
            "",
            table(["method", *cols], recall),
            "",
            "The vectors: items with a trained id, distinct vectors (byte-identical rows merged), rows sharing "
            "their vector with another row, the largest such group, and the median number of items scoring at "
            "least the exact 100th score (100 = no ties at the cut); over 200 sampled items, the median cosine to "
            "the nearest other item and the number of items within cosine 0.999 (near-duplicates); the median "
            "cosine of a query to its best item. The 0.55 HNSW recall the retrieval section once measured came "
            "from an older model whose out-of-vocabulary items crowded into such near-duplicate clusters "
            "(docs/scaling.md has the diagnosis).",
            "",
            table(
                [
                    "items",
                    "trained ids",
                    "distinct vectors",
                    "rows in duplicate groups",
                    "largest group",
                    "items >= 100th score",
                    "nearest-item cosine",
                    "items within 0.999",
                    "max within 0.999",
                    "query best cosine",
                ],
                vectors,
            ),  # fmt: skip
            "",
            "Publishing and batch steps: binary COPY into `vector(64)`, HNSW build (cosine, m=16, "
            "ef_construction=64) with the memory and parallel workers `recsys.vector_index.tables` now sets, the "
            "user-history rewrite (`history.write_user_history`, all interactions), Feast materialization of "
            "item and user features (beyond 100k items the catalogue columns go into Feast's online table by one "
            "COPY instead, and histories stay empty: Feast's local engine and the history rewrite each would "
            "outlast the run here; their exponents come from the smaller points), and `publish.top_k_per_user` "
            "(top-20 per user over every item; at 1M items timed on 20k users and scaled by 5, the blocks being "
            "independent):",
            "",
            table(
                [
                    "items",
                    "COPY s",
                    "COPY rows/s",
                    "HNSW build s",
                    "maintenance_work_mem",
                    "build workers",
                    "history write s",
                    "materialize s",
                    "catalogue COPY s",
                    "top-k users",
                    "top-k s",
                ],
                publish,
            ),  # fmt: skip
            "",
            "The real predictor (`python -m serving`, one process, started by `recsys.predictor_process`) with "
            "retrieval forced to each strategy: seconds until ready (loading vectors and the Feast catalogue), "
            "memory once ready, then 8 closed-loop keep-alive clients asking top-10 for random users:",
            "",
            table(
                ["items", "retrieval", "ready s", "RSS MB", "USS MB", "p50 ms", "p99 ms", "req/s", "errors"], serving
            ),
            "",
            "1-minute load average when each point started (the machine is shared; '-' where not recorded): "
            + ", ".join(f"{p['n_items']:,} items {cell(p.get('load_at_start'))}" for p in pts)
            + ".",
            "",
            "![scale](bench/results/scale.png)",
        ]
    )


def plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label in SERIES:
        pairs = [(p["n_items"], v) for p in d["points"] if (v := value(label, p)) is not None]
        if "(MB)" in label or not pairs:
            continue
        x, y = [n for n, _ in pairs], [v for _, v in pairs]
        ax.plot(x, y, "o-", label=f"{label}, slope {d['exponents'][label]:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("items")
    ax.set_ylabel("seconds (ms where noted)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
