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
