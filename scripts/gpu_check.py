"""The CUDA paths, checked on a machine with an NVIDIA GPU (scripts/gpu-check.sh runs this; README: GPU check).

1. Images in fp16 on CUDA: the tiny random Stable Diffusion pipeline the tests build (tests/sd_tiny.py), and real
   SD v1.5 weights when RECSYS_SD15_PATH names a local diffusers folder.
2. Training on CUDA reaches the quality of training on the CPU: same data, recipe and seed; Recall@10 and NDCG@10.
3. A 1-GPU DDP run over nccl: `torchrun --nproc_per_node=1` (the `nccl` subcommand, started by `all`).

`python scripts/gpu_check.py all --out DIR` prints a table and writes DIR/gpu-check.json for BENCHMARKS.md.
Exit codes: 0 all checks passed, 1 a check failed, 2 no CUDA device here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@10", "ndcg@10")
QUALITY_TOLERANCE = 0.02  # CUDA vs CPU: kernels differ in float rounding, so the runs are close, not equal
SIZES = {
    "n_users": int(os.environ.get("GPU_CHECK_USERS", "1000")),
    "n_items": int(os.environ.get("GPU_CHECK_ITEMS", "5000")),
    "n_interactions": int(os.environ.get("GPU_CHECK_INTERACTIONS", "20000")),
}


def cuda_problem() -> str | None:
    """None when a CUDA device is usable, else one line saying why not and what to do."""
    import torch

    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    smi = "nvidia-smi found" if shutil.which("nvidia-smi") else "no nvidia-smi on PATH"
    return (
        f"gpu-check: no CUDA device: torch {torch.__version__} ({build}) sees no GPU; {smi}. Run this on a machine"
        " with an NVIDIA GPU and a CUDA build of torch (README: GPU check)."
    )


def check_images(work: Path) -> dict:
    """fp16 on CUDA: every image decodes to finite, non-constant pixels (fp16 overflow in the VAE gives NaN ->
    black images), for the tiny pipeline and, when present, real SD v1.5 weights."""
    import numpy as np
    import pandas as pd
    import torch
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from sd_tiny import tiny_pipeline

    from recsys import images, schema

    items = work / "items.parquet"
    names = ["red running shoes", "steel water bottle", "wool scarf", "desk lamp"]
    pd.DataFrame({schema.ITEM_ID: [f"i{n}" for n in range(len(names))], schema.PRODUCT_NAME: names}).to_parquet(items)
    results = {}
    runs = [("tiny (random weights)", None, {"steps": 2, "size": 64})]
    sd15 = os.environ.get("RECSYS_SD15_PATH", "")
    if sd15:
        runs.append(("SD v1.5", sd15, {"steps": 25, "size": 512}))
    for label, model, options in runs:
        out = work / f"images-{len(results)}"
        pipeline = tiny_pipeline().to("cuda", torch.float16) if model is None else None
        report = images.generate_images(
            items, out, model=model or "unused", device="cuda", limit=len(names), batch_size=4, seed=1,
            pipeline=pipeline, **options,
        )  # fmt: skip
        pixels = [np.asarray(Image.open(path), dtype=np.float32) for path in sorted(out.glob("*.png"))]
        ok = len(pixels) == len(names) and all(np.isfinite(p).all() and p.std() > 0 for p in pixels)
        results[label] = {
            "ok": ok,
            "images": len(pixels),
            "seconds_per_image": round(report.seconds / max(1, report.generated), 3),
            **options,
        }
    if not sd15:
        results["SD v1.5"] = {"ok": None, "skipped": "RECSYS_SD15_PATH not set (no local weights)"}
    return results


def train_once(data: Path, out: Path, device: str) -> dict:
    from recsys.model.config import Hyperparameters
    from recsys.model.train import train

    started = time.perf_counter()
    train(data, out, Hyperparameters(seed=42), split="temporal", device=device)
    seconds = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())["model"]
    best = json.loads((out / "config.json").read_text())["training"]["best_epoch"]
    return {"seconds": round(seconds, 1), "best_epoch": best, **{m: round(metrics[m], 4) for m in METRICS}}


def check_training(work: Path) -> dict:
    """The same data, recipe and seed on the CPU and on CUDA."""
    from recsys.data.generate import generate

    data = work / "data"
    generate(out=data, seed=42, **SIZES)
    cpu = train_once(data, work / "model-cpu", "cpu")
    cuda = train_once(data, work / "model-cuda", "cuda")
    gap = {m: round(abs(cpu[m] - cuda[m]), 4) for m in METRICS}
    return {"sizes": SIZES, "cpu": cpu, "cuda": cuda, "gap": gap, "ok": max(gap.values()) <= QUALITY_TOLERANCE}


def nccl_rank() -> None:
    """Under torchrun: an nccl process group, an all-reduce, and DDP steps of the real towers on the GPU."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl")
    device = torch.device("cuda", local_rank)
    total = torch.ones(4, device=device)
    dist.all_reduce(total)
    model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                                        torch.nn.Linear(256, 64)).to(device))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for _ in range(50):
        batch = torch.randn(512, 64, device=device)
        loss = (model(batch) - batch).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()  # the gradients are all-reduced over nccl here
        optimizer.step()
    torch.cuda.synchronize()
    if dist.get_rank() == 0:
        print(json.dumps({
            "backend": dist.get_backend(), "world_size": dist.get_world_size(),
            "all_reduce_ok": bool((total == dist.get_world_size()).all()), "steps": 50,
            "ms_per_step": round((time.perf_counter() - started) * 1000 / 50, 2), "final_loss": round(loss.item(), 4),
        }))  # fmt: skip
    dist.destroy_process_group()


def check_nccl() -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", __file__, "nccl"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr[-1500:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"ok": result["backend"] == "nccl" and result["all_reduce_ok"], **result}


def gpu_name() -> str:
    import torch

    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__} CUDA {torch.version.cuda}"


def table(results: dict) -> str:
    rows = ["| check | result | figures |", "| --- | --- | --- |"]
    for label, found in results["images"].items():
        figures = found.get("skipped") or f"{found['images']} images, {found['seconds_per_image']} s/image, " + (
            f"{found['steps']} steps at {found['size']}px, fp16"
        )
        rows.append(f"| images: {label} | {_verdict(found['ok'])} | {figures} |")
    training = results["training"]
    cpu, cuda = training["cpu"], training["cuda"]
    rows.append(
        f"| training CUDA vs CPU | {_verdict(training['ok'])} | Recall@10 {cuda['recall@10']} vs {cpu['recall@10']},"
        f" NDCG@10 {cuda['ndcg@10']} vs {cpu['ndcg@10']}; {cuda['seconds']} s vs {cpu['seconds']} s |"
    )
    nccl = results["nccl"]
    figures = f"{nccl.get('ms_per_step')} ms/DDP step" if nccl["ok"] else nccl.get("error", "")[-200:]
    rows.append(f"| DDP nccl, 1 GPU | {_verdict(nccl['ok'])} | {figures} |")
    return "\n".join(rows)


def _verdict(ok: bool | None) -> str:
    return "skipped" if ok is None else ("ok" if ok else "**FAILED**")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what",
        choices=["all", "nccl", "cuda"],
        help="all checks; nccl: one torchrun rank; cuda: only say whether CUDA works",
    )
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder for gpu-check.json and scratch")
    args = parser.parse_args()
    if args.what == "nccl":
        nccl_rank()
        return 0
    problem = cuda_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.what == "cuda":
        print(f"gpu-check: CUDA works: {gpu_name()}")
        return 0
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results = {"gpu": gpu_name(), "images": check_images(work), "training": check_training(work),
               "nccl": check_nccl()}  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    (args.out / "gpu-check.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"GPU: {results['gpu']}\n\n{table(results)}\n\nwrote {args.out / 'gpu-check.json'}")
    checks = [*(r["ok"] for r in results["images"].values()), results["training"]["ok"], results["nccl"]["ok"]]
    return 0 if all(ok is not False for ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
