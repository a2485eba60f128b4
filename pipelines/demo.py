"""`recsys demo` (make demo): the whole system on this machine, end to end.

Postgres -> the pipeline through kfp.local (data, Feast, training, evaluation, gate, publishing) -> the KServe
predictor as a subprocess on a free loopback port -> recommendations for a known user, a new user described by
preferences and an unknown id -> the predictor stopped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from components.staging import feature_repo_data_dir
from pipelines.runner import LOCAL_SIZES, LocalRun, run_local
from recsys import schema
from recsys.config import get_settings

MODEL_NAME = "recommender"
UNKNOWN_USER = "user-that-never-shopped"
READY_TIMEOUT_S = 120.0


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_predictor(model_dir: Path, port: int, log_path: Path) -> Iterator[str]:
    """`python -m serving` in a subprocess until the block ends; yields its base URL once it is ready."""
    url = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--http_port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        try:
            _wait_ready(process, url, log_path)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the predictor exited with code {process.returncode} (log: {log_path})")
        try:
            if httpx.get(f"{url}/v1/models/{MODEL_NAME}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the predictor was not ready after {READY_TIMEOUT_S:.0f} s (log: {log_path})")


def demo_requests(data_dir: Path, k: int) -> list[tuple[str, dict[str, Any]]]:
    """(label, V1 instance) for a known user, a new user described by preferences, and an unknown id."""
    import pandas as pd

    users = pd.read_parquet(data_dir / schema.USERS_FILE, columns=[schema.USER_ID, schema.PREFERENCES])
    known = str(users[schema.USER_ID].iloc[0])
    preferences = str(users[schema.PREFERENCES].iloc[-1])
    return [
        (f"known user {known}", {"user_id": known, "k": k}),
        (
            f"new user who likes {preferences}",
            {"user": {schema.PREFERENCES: preferences, schema.AGE: 31, schema.GENDER: "F"}, "k": k},
        ),
        (f"unknown id {UNKNOWN_USER}", {"user_id": UNKNOWN_USER, "k": k}),
    ]


def print_pipeline_summary(console: Console, run: LocalRun) -> None:
    table = Table(title=f"pipeline run in {run.seconds:.0f} s, model {run.model_version}")
    table.add_column("ranker")
    table.add_column("Recall@10", justify="right")
    table.add_column("NDCG@10", justify="right")
    rows = {"two-tower": run.metrics["model"], **run.metrics["baselines"]}
    for name, values in rows.items():
        table.add_row(name, f"{values['recall@10']:.4f}", f"{values['ndcg@10']:.4f}")
    console.print(table)
    console.print(f"published: {'yes' if run.published else 'no (quality gate not passed)'}; run folder {run.run_dir}")


def print_recommendations(console: Console, label: str, prediction: dict[str, Any]) -> None:
    table = Table(title=f"{label} (cold start: {prediction.get('cold_start')})")
    for column in ("rank", "item_id", "score", "product_name", "category"):
        table.add_column(column)
    for rank, item in enumerate(prediction["items"], start=1):
        table.add_row(
            str(rank),
            item["item_id"],
            f"{item['score']:.3f}",
            str(item.get("product_name", "")),
            str(item.get("category", "")),
        )
    console.print(table)


def run_demo(console: Console, k: int = 5, **pipeline_arguments: Any) -> LocalRun:
    """The whole demo; returns the pipeline run. Raises RuntimeError when a stage fails."""
    from recsys import db

    console.rule("1/3 PostgreSQL + pgvector")
    console.print(f"ready: {db.redacted(db.start())}")
    console.rule("2/3 the Kubeflow pipeline, locally (kfp.local)")
    arguments = {**LOCAL_SIZES, "with_images": False, **pipeline_arguments}
    console.print(f"arguments: {arguments}")
    run = run_local(**arguments)
    print_pipeline_summary(console, run)
    if not run.published:
        raise RuntimeError("the quality gate kept the model from being published: nothing to serve")

    console.rule("3/3 the KServe predictor")
    port = free_loopback_port()
    with running_predictor(run.model_dir, port, get_settings().home / "demo-predictor.log") as url:
        console.print(f"predictor ready at {url}/v1/models/{MODEL_NAME}")
        for label, instance in demo_requests(feature_repo_data_dir(), k):
            response = httpx.post(f"{url}/v1/models/{MODEL_NAME}:predict", json={"instances": [instance]}, timeout=30)
            if response.status_code != 200:
                raise RuntimeError(f"{label}: HTTP {response.status_code} {response.text[:200]}")
            print_recommendations(console, label, response.json()["predictions"][0])
    console.print("predictor stopped")
    return run
