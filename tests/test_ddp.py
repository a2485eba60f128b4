"""Scale-out: `recsys train` under torchrun with two CPU processes (DistributedDataParallel over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.model import artifacts


@pytest.mark.e2e
def test_torchrun_two_cpu_processes_write_one_model_of_usual_quality(tiny_data: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    recsys_script = Path(sys.executable).parent / "recsys"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(recsys_script),
        "train", "--data", str(tiny_data), "--out", str(model_dir), "--epochs", "4", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("written to") == 1  # only rank 0 reports

    model = artifacts.load_model(model_dir)
    assert model.config["training"]["world_size"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no second or half-written dir
    metrics = json.loads((model_dir / artifacts.METRICS_FILE).read_text())
    assert metrics["model"]["recall@20"] > metrics["baselines"]["popularity"]["recall@20"]


# dropout off: each rank draws its own dropout masks, which alone moves tiny-data scores by ~0.05 (measured)
RECIPE = {"epochs": 30, "history_dropout": 0.0, "id_dropout": 0.0, "item_id_dropout": 0.0}
TRAIN_SCRIPT = """
import json, sys
from pathlib import Path
from recsys.model.config import Hyperparameters
from recsys.model.train import train
train(Path(sys.argv[1]), Path(sys.argv[2]), Hyperparameters(**json.loads(sys.argv[3])), device="cpu")
"""


@pytest.mark.e2e
def test_two_processes_reach_the_quality_of_one_on_the_same_data(tiny_data: Path, tmp_path: Path) -> None:
    """DDP gives each rank half of every global batch and averages the gradients: the same steps as one process
    (each rank normalises its loss by its own positives, hence close, not equal; measured |d| < 0.003)."""
    from recsys.model.config import Hyperparameters
    from recsys.model.train import train

    script = tmp_path / "train_ddp.py"
    script.write_text(TRAIN_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(tiny_data), str(tmp_path / "ddp"), json.dumps(RECIPE)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    single_dir = train(tiny_data, tmp_path / "single", Hyperparameters(**RECIPE), device="cpu")

    single, ddp = (json.loads((d / artifacts.METRICS_FILE).read_text()) for d in (single_dir, tmp_path / "ddp"))
    assert artifacts.load_model(tmp_path / "ddp").config["training"]["world_size"] == 2
    for metric in ("recall@10", "ndcg@10"):
        assert ddp["model"][metric] == pytest.approx(single["model"][metric], abs=0.01), metric
    assert single["model"]["recall@10"] > single["baselines"]["popularity"]["recall@10"]  # both learned something
