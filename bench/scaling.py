"""Scaling: how generation, one training epoch and exact retrieval grow in time, and the process in peak memory,
from 10k to 1M interactions and from 5k to 100k items. Each point runs in its own process (its own peak RSS).

`python -m bench.scaling '{"n_users": .., "n_items": .., "n_interactions": ..}'` measures one point and prints
its JSON (what run() starts per point).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import RESULTS_DIR, ROOT, Result, percentiles_ms, table
from bench.env import load_note, quick
from bench.fixtures import SEED, generate_data, training_hyperparameters

USERS = 1000
RETRIEVAL_QUERIES = 100
RETRIEVAL_K = 100
POINT_TIMEOUT_S = 300
MEASURES = {  # key in a point's JSON -> label
    "generate_s": "generation (s)",
    "epoch_s": "one training epoch (s)",
    "retrieval_p50_ms": "exact top-100 per query (ms)",
}


def sweeps() -> dict[str, list[dict]]:
    if quick():
        return {
            "interactions": [{"n_users": 50, "n_items": 300, "n_interactions": n} for n in (2000, 5000)],
            "items": [{"n_users": 50, "n_items": n, "n_interactions": 2000} for n in (300, 900)],
        }
    return {
        "interactions": [
            {"n_users": USERS, "n_items": 5000, "n_interactions": n} for n in (10_000, 100_000, 1_000_000)
        ],
        "items": [{"n_users": USERS, "n_items": n, "n_interactions": 100_000} for n in (5000, 20_000, 100_000)],
    }


def measure_point(n_users: int, n_items: int, n_interactions: int) -> dict:
    """Generate, train one epoch (product texts left out: MiniLM is a per-item one-off, cached), and time exact
    top-100 retrieval over the trained item vectors; peak RSS of this process at the end."""
    import pandas as pd
    import torch

    from bench.throughput import drop_texts
    from recsys import schema
    from recsys.model.dataset import make_split
    from recsys.model.distributed import Runtime
    from recsys.model.train import fit
    from recsys.model.training_data import read_training_data, time_ordered_positives
    from recsys.retrieval import ExactRetriever

    with tempfile.TemporaryDirectory(prefix="recsys-bench-scaling-") as tmp:
        started = time.perf_counter()
        data = generate_data(Path(tmp) / "data", n_users, n_items, n_interactions)
        generate_s = time.perf_counter() - started
        rss_after_generate_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data = drop_texts(data, Path(tmp) / "no-text")
        dataset = read_training_data(data)
        parts = make_split(dataset.interactions, "temporal", SEED)
        hp = training_hyperparameters(1)
        epochs = []
        started = time.perf_counter()
        result = fit(dataset, parts, hp, Runtime(torch.device("cpu")), on_epoch=epochs.append)
        fit_s = time.perf_counter() - started
        items = pd.read_parquet(data / schema.ITEMS_FILE)
        with torch.no_grad():
            vectors = result.model.item_tower(**result.features.encode_items(items)).numpy()
    retriever = ExactRetriever(vectors)
    queries = vectors[np.random.default_rng(SEED).integers(0, len(vectors), RETRIEVAL_QUERIES)]
    seconds = []
    for q in queries:
        t0 = time.perf_counter()
        retriever.search(q[None, :], RETRIEVAL_K)
        seconds.append(time.perf_counter() - t0)
    return {
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": n_interactions,
        "generate_s": generate_s,
        # EpochReport carries examples/s; the examples are the training part's positive interactions
        "epoch_s": len(time_ordered_positives(parts.train)) / epochs[0].interactions_per_s,
        "fit_s": fit_s,
        "examples_per_s": epochs[0].interactions_per_s,
        "retrieval_p50_ms": percentiles_ms(seconds)["p50"],
        "rss_after_generate_mb": rss_after_generate_mb,  # imports + generation
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_point(point: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.scaling", json.dumps(point)],
        cwd=ROOT, capture_output=True, text=True, timeout=POINT_TIMEOUT_S, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"scaling point {point} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(x: list[float], y: list[float]) -> float:
    """Slope of log y against log x: time ~ size^slope."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run() -> Result:
    started_under = load_note()
    results: dict[str, list[dict]] = {}
    measured: dict[tuple, dict] = {}  # a point both sweeps share runs once
    for sweep, points in sweeps().items():
        results[sweep] = []
        for point in points:
            key = tuple(sorted(point.items()))
            if key not in measured:
                print(f"   scaling: {point}", flush=True)
                measured[key] = run_point(point)
            results[sweep].append(measured[key])
    fits = {
        sweep: {
            key: exponent([p[f"n_{sweep}"] for p in points], [p[key] for p in points])
            for key in [*MEASURES, "peak_rss_mb"]
        }
        for sweep, points in results.items()
    }
    plot(results, fits, RESULTS_DIR / "scaling.png")
    return Result(
        name="scaling",
        title="Scaling: time and memory vs interactions and items",
        command="python -m bench scaling",
        markdown=markdown(results, fits) + "\n\n" + started_under,
        data={"points": results, "exponents": fits},
    )


def markdown(results: dict, fits: dict) -> str:
    rows = [
        [sweep, p["n_users"], p["n_items"], p["n_interactions"], p["generate_s"], p["epoch_s"], p["fit_s"],
         f"{p['examples_per_s']:,.0f}", p["retrieval_p50_ms"], f"{p['rss_after_generate_mb']:.0f}",
         f"{p['peak_rss_mb']:.0f}"]
        for sweep, points in results.items()
        for p in points
    ]  # fmt: skip
    fit_rows = [[sweep, *(f"{fits[sweep][k]:.2f}" for k in [*MEASURES, "peak_rss_mb"])] for sweep in fits]
    return "\n".join(
        [
            f"Each point in a fresh process: `generate` (seed {SEED}), then one epoch of the real training loop "
            "(`train.fit`, temporal split, product texts left out) and exact top-100 retrieval over the trained "
            "item vectors; peak memory is the process's max RSS right after generation (the imported libraries and "
            "the generated data) and at the end (training and retrieval added). "
            "`fit` also holds setup and one validation pass.",
            "",
            table(
                [
                    "sweep",
                    "users",
                    "items",
                    "interactions",
                    "generate s",
                    "epoch s",
                    "fit s",
                    "examples/s",
                    "top-100 ms",
                    "RSS after generation MB",
                    "peak RSS MB",
                ],
                rows,
            ),  # fmt: skip
            "",
            "Fitted exponents (slope of the log-log line: time ~ size^slope):",
            "",
            table(["sweep", *MEASURES.values(), "peak RSS"], fit_rows),
            "",
            "![scaling](bench/results/scaling.png)",
        ]
    )


def plot(results: dict, fits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7), squeeze=False)
    for col, (sweep, points) in enumerate(results.items()):
        x = [p[f"n_{sweep}"] for p in points]
        ax = axes[0][col]
        for key, label in MEASURES.items():
            ax.plot(x, [p[key] for p in points], "o-", label=f"{label}, slope {fits[sweep][key]:.2f}")
        ax.set_title(f"time vs {sweep}")
        mem = axes[1][col]
        mem.plot(x, [p["peak_rss_mb"] for p in points], "o-", label=f"peak RSS, slope {fits[sweep]['peak_rss_mb']:.2f}")
        mem.set_ylabel("MB")
        mem.set_title(f"memory vs {sweep}")
        for a in (ax, mem):
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_xlabel(sweep)
            a.grid(True, which="both", alpha=0.3)
            a.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    print(json.dumps(measure_point(**json.loads(sys.argv[1]))))
