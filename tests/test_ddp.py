"""Scale-out: `recsys train` under torchrun with two CPU processes (DistributedDataParallel over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.model import artifacts

EPOCHS = 30  # at 200 users a step takes 128 of them: ~60 steps, enough to learn more than popularity


@pytest.fixture(scope="module")
def torchrun_model_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The model dir two torchrun processes wrote, and their output."""
    model_dir = tmp_path_factory.mktemp("ddp") / "model"
    recsys_script = Path(sys.executable).parent / "recsys"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(recsys_script),
        "train", "--data", str(tiny_data), "--out", str(model_dir), "--epochs", str(EPOCHS), "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return model_dir, done.stdout


@pytest.mark.e2e
def test_torchrun_two_cpu_processes_write_one_model_of_usual_quality(torchrun_model_dir: tuple[Path, str]) -> None:
    model_dir, output = torchrun_model_dir
    assert output.count("written to") == 1  # only rank 0 reports

    model = artifacts.load_model(model_dir)
    assert model.config["training"]["world_size"] == 2
    assert [p.name for p in model_dir.parent.iterdir()] == ["model"]  # no second or half-written dir
    metrics = json.loads((model_dir / artifacts.METRICS_FILE).read_text())
    assert metrics["model"]["recall@20"] > metrics["baselines"]["popularity"]["recall@20"]


@pytest.mark.e2e
def test_two_processes_reach_the_quality_of_one_on_the_same_data(
    torchrun_model_dir: tuple[Path, str], tiny_data: Path, tmp_path: Path
) -> None:
    """DDP splits each global batch over the ranks and averages their gradients: the same steps as one process, up
    to the ranks' own dropout draws. So the scores agree within noise (measured: |d| < 0.002 at this size, while
    another seed moves them by ~0.02-0.06; bench/distributed.py)."""
    from recsys.model.config import Hyperparameters
    from recsys.model.train import train

    single_dir = train(tiny_data, tmp_path / "single", Hyperparameters(epochs=EPOCHS), device="cpu")
    single = json.loads((single_dir / artifacts.METRICS_FILE).read_text())["model"]
    ddp = json.loads((torchrun_model_dir[0] / artifacts.METRICS_FILE).read_text())["model"]
    for metric in ("recall@10", "ndcg@10"):
        assert ddp[metric] == pytest.approx(single[metric], abs=0.03), (metric, ddp, single)
    assert single["recall@10"] > 0  # both learned something: the comparison is not 0 == 0
