"""Distributed training: `recsys train` under `torchrun --nproc_per_node=2` (DDP over gloo, CPU) against one process
on the same data and recipe. The quality must match within noise; the noise yardstick is one process with another
seed. Each run is a fresh `recsys train` process, so the times include start-up and the evaluation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Goal, Result, table
from bench.env import load_note, quick, workspace
from bench.fixtures import QUICK_SIZES, SEED, generate_data
from recsys.contract import DEFAULT_SIZES

METRICS = ("recall@10", "ndcg@10")
NOISE_FLOOR = 0.01  # tolerance added to the seed-to-seed spread (tiny test sets move by about this much)


def train_run(data: Path, out: Path, processes: int, seed: int, home: Path) -> dict:
    """One `recsys train` (under torchrun when processes > 1); its metrics, world size, best epoch and seconds."""
    recsys = str(Path(sys.executable).parent / "recsys")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else []), recsys, "train", "--data", str(data), "--out", str(out),
               "--seed", str(seed), "--device", "cpu", "--no-events"]  # fmt: skip
    if quick():
        command += ["--epochs", "2"]
    env = {**os.environ, "RECSYS_HOME": str(home), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} failed: {done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    training = json.loads((out / "config.json").read_text())["training"]
    return {
        "processes": processes,
        "seed": seed,
        "seconds": round(seconds, 1),
        "world_size": training["world_size"],
        "best_epoch": training["best_epoch"],
        **{name: metrics["model"][name] for name in METRICS},
    }


def run() -> Result:
    started_under = load_note()
    sizes = QUICK_SIZES if quick() else DEFAULT_SIZES
    with workspace("distributed", database=False) as root:
        data = generate_data(root / "data", **sizes)
        runs = []
        for label, processes, seed in (("1 process", 1, SEED), ("torchrun x2", 2, SEED), ("1 process", 1, SEED + 1)):
            print(f"   distributed: {label}, seed {seed}", flush=True)
            runs.append(train_run(data, root / f"model-{processes}-{seed}", processes, seed, root / "home"))
    single, ddp, other_seed = runs
    spread = {name: abs(single[name] - other_seed[name]) for name in METRICS}
    gap = {name: abs(ddp[name] - single[name]) for name in METRICS}
    within = all(gap[name] <= spread[name] + NOISE_FLOOR for name in METRICS)
    rows = [
        [f"{r['processes']} ({'torchrun, gloo' if r['processes'] > 1 else 'plain'})", r["seed"], r["world_size"],
         f"{r['recall@10']:.4f}", f"{r['ndcg@10']:.4f}", r["best_epoch"], r["seconds"]]
        for r in runs
    ]  # fmt: skip
    markdown = "\n\n".join(
        [
            f"Synthetic data: {sizes['n_users']} users, {sizes['n_items']} items, {sizes['n_interactions']} "
            f"interactions; temporal split; the default recipe{' (2 epochs: quick mode)' if quick() else ''}.",
            table(["processes", "seed", "world size", "Recall@10", "NDCG@10", "best epoch", "seconds"], rows),
            f"2 processes vs 1 (seed {SEED}): |dRecall@10| {gap['recall@10']:.4f}, |dNDCG@10| {gap['ndcg@10']:.4f};"
            f" seed {SEED} vs {SEED + 1} (one process): {spread['recall@10']:.4f}, {spread['ndcg@10']:.4f}.",
            "Quality, not speed: the seconds include start-up and the evaluation and follow the machine's load; on a"
            " shared 2-core machine a 2-thread process suffers more from other work than two 1-thread ranks do.",
            "On a cluster the same command runs as a Kubeflow Trainer TrainJob (`--train-workers N`, README).",
            started_under,
        ]
    )
    goal = Goal(
        "torchrun x2 quality vs 1 process",
        f"within the seed-to-seed spread + {NOISE_FLOOR}",
        f"dNDCG@10 {gap['ndcg@10']:.4f} (spread {spread['ndcg@10']:.4f})",
        met=within,
    )
    return Result(
        name="distributed",
        title="Distributed training: torchrun x2 vs one process",
        command="python -m bench distributed",
        markdown=markdown,
        goals=[goal],
        data={"sizes": sizes, "runs": runs, "gap": gap, "seed_spread": spread, "within_noise": within},
    )
