"""Compile the pipeline to YAML, run it here with kfp.local, or submit it to a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import get_settings
from recsys.contract import DEFAULT_SIZES


@dataclass(frozen=True)
class LocalRun:
    """What a kfp.local run left behind."""

    run_dir: Path  # kfp.local's folder of this run: one subfolder per task
    model_dir: Path  # the trained model (the Model artifact)
    model_version: str
    metrics: dict[str, Any]  # the model's metrics.json: model vs baselines
    published: bool  # the quality gate passed and publish ran
    seconds: float


def compile_pipeline(out: Path) -> Path:
    """Write the pipeline's IR YAML to `out` (the file Kubeflow's UI and API accept)."""
    from kfp import compiler

    from pipelines.recommender import recommender_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(recommender_pipeline, str(out))
    return out


def run_local(pipeline_root: Path | None = None, **arguments: Any) -> LocalRun:
    """Run the whole DAG in subprocesses of this venv (kfp.local SubprocessRunner, no venv per step).

    Every step talks to the same Postgres: RECSYS_PG_DSN when set, else the embedded server, whose DSN is exported
    so the steps reuse it. The deploy step is off unless `deploy=True` is passed (no cluster here).
    Raises RuntimeError when the run fails.
    """
    import kfp.local

    from pipelines.recommender import PIPELINE_NAME, recommender_pipeline
    from recsys import db
    from recsys.model.artifacts import METRICS_FILE, MODEL_VERSION_FILE

    if not os.environ.get("RECSYS_PG_DSN"):
        os.environ["RECSYS_PG_DSN"] = db.start()
        get_settings.cache_clear()
    root = Path(pipeline_root or get_settings().home / "pipeline-runs").resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.glob(f"{PIPELINE_NAME}-*"))
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # kfp.local warns, per step, that cluster-only settings (GPU, limits, image) do not apply here
        warnings.filterwarnings("ignore", message=".*(no effect in the current local runner|non-Python base image)")
        recommender_pipeline(**{**DEFAULT_SIZES, "deploy": False, **arguments})
    seconds = time.perf_counter() - started

    new_runs = sorted(set(root.glob(f"{PIPELINE_NAME}-*")) - before)
    if len(new_runs) != 1:
        raise RuntimeError(f"expected one new run folder under {root}, found {len(new_runs)}")
    run_dir = new_runs[0]
    model_dirs = [p.parent for p in run_dir.rglob(MODEL_VERSION_FILE)]
    if len(model_dirs) != 1:
        raise RuntimeError(f"expected one trained model under {run_dir}, found {len(model_dirs)}")
    model_dir = model_dirs[0]
    return LocalRun(
        run_dir=run_dir,
        model_dir=model_dir,
        model_version=(model_dir / MODEL_VERSION_FILE).read_text().strip(),
        metrics=json.loads((model_dir / METRICS_FILE).read_text()),
        published=any(p.is_dir() for p in run_dir.glob("publish*")),
        seconds=seconds,
    )


def submit(
    host: str,
    experiment: str = "recsys",
    arguments: dict[str, Any] | None = None,
    wait: bool = False,
    timeout_s: int = 3600,
) -> str:
    """Submit one run to the Kubeflow Pipelines API at `host`; returns the run id (waits when asked)."""
    import kfp

    from pipelines.recommender import recommender_pipeline

    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_func(
        recommender_pipeline, arguments=arguments or {}, experiment_name=experiment
    )
    if wait:
        finished = client.wait_for_run_completion(run.run_id, timeout=timeout_s)
        if str(finished.state).upper() != "SUCCEEDED":
            raise RuntimeError(f"run {run.run_id} ended in state {finished.state}")
    return run.run_id
