"""Compile the pipeline to YAML, run it here with kfp.local, or submit it to a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.config import get_settings
from recsys.contract import DEFAULT_SIZES

if TYPE_CHECKING:
    from recsys.training_job import DistributedTraining


@dataclass(frozen=True)
class LocalRun:
    """What a kfp.local run left behind."""

    run_dir: Path  # kfp.local's folder of this run: one subfolder per task
    model_dir: Path  # the trained model (the Model artifact)
    model_version: str
    metrics: dict[str, Any]  # the model's metrics.json: model vs baselines
    published: bool  # the quality gate passed and publish ran
    seconds: float
    log_file: Path | None = None  # the steps' output, when run_local was given a log file


def compile_pipeline(out: Path, training: DistributedTraining | None = None) -> Path:
    """Write the pipeline's IR YAML to `out` (the file Kubeflow's UI and API accept); with `training`, its train
    step runs a Kubeflow Trainer TrainJob of that shape."""
    from kfp import compiler

    from pipelines.recommender import build_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(training), str(out))
    return out


def run_local(pipeline_root: Path | None = None, log_file: Path | None = None, **arguments: Any) -> LocalRun:
    """Run the whole DAG in subprocesses of this venv (kfp.local SubprocessRunner, no venv per step).

    Every step talks to the same Postgres: RECSYS_PG_DSN when set, else the embedded server, whose DSN is exported
    so the steps reuse it. The deploy step is off unless `deploy=True` is passed (no cluster here).
    With `log_file`, the steps' output (hundreds of lines of executor JSON) goes there instead of this process's
    output, and the file is moved into the run folder afterwards. A published model is added to the model store.
    Raises RuntimeError when the run fails.
    """
    import kfp.local

    from pipelines.recommender import PIPELINE_NAME, recommender_pipeline
    from recsys import db, model_store
    from recsys.model.artifacts import METRICS_FILE, MODEL_VERSION_FILE

    if not os.environ.get("RECSYS_PG_DSN"):
        os.environ["RECSYS_PG_DSN"] = db.start()
        get_settings.cache_clear()
    root = Path(pipeline_root or get_settings().home / "pipeline-runs").resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.glob(f"{PIPELINE_NAME}-*"))
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    started = time.perf_counter()
    with warnings.catch_warnings(), _output_to(log_file):
        # kfp.local warns, per step, that cluster-only settings (GPU, limits, image) do not apply here
        warnings.filterwarnings("ignore", message=".*(no effect in the current local runner|non-Python base image)")
        try:
            recommender_pipeline(**{**DEFAULT_SIZES, "deploy": False, **arguments})
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}{f' (the steps wrote {log_file})' if log_file else ''}") from exc
    seconds = time.perf_counter() - started

    new_runs = sorted(set(root.glob(f"{PIPELINE_NAME}-*")) - before)
    if len(new_runs) != 1:
        raise RuntimeError(f"expected one new run folder under {root}, found {len(new_runs)}")
    run_dir = new_runs[0]
    if log_file is not None:
        log_file = Path(log_file).replace(run_dir / "pipeline.log")
    model_dirs = [p.parent for p in run_dir.rglob(MODEL_VERSION_FILE)]
    if len(model_dirs) != 1:
        raise RuntimeError(f"expected one trained model under {run_dir}, found {len(model_dirs)}")
    model_dir = model_dirs[0]
    published = any(p.is_dir() for p in run_dir.glob("publish*"))
    if published:  # live now: the predictor and `recsys recommend` load it from the store
        model_store.add(model_dir)
    return LocalRun(
        run_dir=run_dir,
        model_dir=model_dir,
        model_version=(model_dir / MODEL_VERSION_FILE).read_text().strip(),
        metrics=json.loads((model_dir / METRICS_FILE).read_text()),
        published=published,
        seconds=seconds,
        log_file=log_file,
    )


@contextlib.contextmanager
def _output_to(log_file: Path | None) -> Iterator[None]:
    """Send this process's output (Python's and the file descriptors the step subprocesses inherit) to
    `log_file` for the block; None: leave it alone."""
    if log_file is None:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def submit(
    host: str,
    experiment: str = "recsys",
    arguments: dict[str, Any] | None = None,
    wait: bool = False,
    timeout_s: int = 3600,
    training: DistributedTraining | None = None,
) -> str:
    """Submit one run to the Kubeflow Pipelines API at `host`; returns the run id (waits when asked). With
    `training`, the train step runs a Kubeflow Trainer TrainJob of that shape."""
    import kfp

    from pipelines.recommender import build_pipeline

    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_func(
        build_pipeline(training), arguments=arguments or {}, experiment_name=experiment
    )
    if wait:
        finished = client.wait_for_run_completion(run.run_id, timeout=timeout_s)
        if str(finished.state).upper() != "SUCCEEDED":
            raise RuntimeError(f"run {run.run_id} ended in state {finished.state}")
    return run.run_id
