"""scripts/gpu-check.sh, the prepared check of the CUDA paths: what can be checked without a GPU. On a machine
without CUDA it must stop at once with one clear line and exit code 2, writing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"

pytestmark = pytest.mark.unit


def test_gpu_check_script_parses_and_names_each_check() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    checks = (ROOT / "scripts" / "gpu_check.py").read_text()
    for part in ("float16", "RECSYS_SD15_PATH", '"nccl"', "--nproc_per_node=1", 'device="cuda"', "gpu-check.json"):
        assert part in checks, part


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: run scripts/gpu-check.sh itself")
def test_without_cuda_the_script_stops_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("gpu-check: no CUDA device:") and "NVIDIA GPU" in line and "CUDA build of torch" in line
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "out").exists()
