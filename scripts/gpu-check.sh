#!/usr/bin/env bash
# One prepared check of the CUDA paths, for a machine with an NVIDIA GPU (README: GPU check):
#   images in fp16 on CUDA (tiny random Stable Diffusion pipeline; real SD v1.5 when RECSYS_SD15_PATH names a local
#   diffusers folder), training on CUDA vs the CPU (same data and seed: Recall@10, NDCG@10), a 1-GPU nccl DDP run
#   (torchrun --nproc_per_node=1). Prints a table and writes $GPU_CHECK_OUT/gpu-check.json for BENCHMARKS.md.
# Needs the project installed with a CUDA build of torch (PYTHON, default .venv/bin/python, else python3).
# Exit codes: 0 passed, 1 a check failed, 2 no CUDA device (nothing else runs then).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
OUT=${GPU_CHECK_OUT:-gpu-check}

"$PYTHON" scripts/gpu_check.py cuda   # exits 2 with the reason when there is no usable GPU
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RECSYS_HOME="$OUT/home"         # the check's model store and caches stay out of the user's
exec "$PYTHON" scripts/gpu_check.py all --out "$OUT"
