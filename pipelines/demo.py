"""`recsys demo` (make demo): the whole system on this machine, end to end.

Postgres -> the pipeline through kfp.local (data, Feast, training, evaluation, gate, publishing) -> the KServe
predictor as a subprocess on a free loopback port -> recommendations for a known user, a new user described by
preferences and an unknown id -> (with `ui_port`: the storefront page until Ctrl-C) -> the predictor stopped.
What happens is told to a DemoReport (the CLI prints it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import httpx

from components.staging import feature_repo_data_dir
from pipelines.runner import LocalRun, run_local
from recsys import schema
from recsys.config import get_settings
from recsys.contract import DEFAULT_SIZES, MODEL_STATUS_PATH, PREDICT_PATH
from recsys.predictor_process import running_predictor

UNKNOWN_USER = "user-that-never-shopped"
REQUEST_TIMEOUT_S = 30.0


class DemoReport(Protocol):
    """Where the demo tells its progress and results."""

    def stage(self, title: str) -> None: ...

    def note(self, text: str) -> None: ...

    def pipeline_finished(self, run: LocalRun) -> None: ...

    def answer(self, label: str, prediction: dict[str, Any]) -> None: ...


def demo_requests(data_dir: Path, k: int) -> list[tuple[str, dict[str, Any]]]:
    """(label, V1 instance) for a known user, a new user described by preferences, and an unknown id."""
    import pandas as pd

    users = pd.read_parquet(data_dir / schema.USERS_FILE, columns=[schema.USER_ID, schema.PREFERENCES])
    known = str(users[schema.USER_ID].iloc[0])
    preferences = str(users[schema.PREFERENCES].iloc[-1])
    return [
        (f"known user {known}", {schema.USER_ID: known, "k": k}),
        (
            f"new user who likes {preferences}",
            {"user": {schema.PREFERENCES: preferences, schema.AGE: 31, schema.GENDER: "F"}, "k": k},
        ),
        (f"unknown id {UNKNOWN_USER}", {schema.USER_ID: UNKNOWN_USER, "k": k}),
    ]


def run_demo(report: DemoReport, k: int = 5, ui_port: int | None = None, **pipeline_arguments: Any) -> LocalRun:
    """The whole demo; returns the pipeline run. Raises RuntimeError when a stage fails.

    With `ui_port`, the storefront page (recsys.ui) then serves on that port, in front of the still running
    predictor, until Ctrl-C stops both.
    """
    from recsys import db

    report.stage("1/3 PostgreSQL + pgvector")
    report.note(f"ready: {db.redacted(db.start())}")
    report.stage("2/3 the Kubeflow pipeline, locally (kfp.local)")
    arguments = {**DEFAULT_SIZES, "with_images": False, **pipeline_arguments}
    report.note(f"arguments: {arguments}")
    run = run_local(**arguments)
    report.pipeline_finished(run)
    if not run.published:
        raise RuntimeError("the quality gate kept the model from being published: nothing to serve")

    report.stage("3/3 the KServe predictor")
    with running_predictor(run.model_dir, get_settings().home / "demo-predictor.log") as predictor:
        report.note(f"predictor ready at {predictor.url}{MODEL_STATUS_PATH}")
        for label, instance in demo_requests(feature_repo_data_dir(), k):
            body = {"instances": [instance]}
            response = httpx.post(predictor.url + PREDICT_PATH, json=body, timeout=REQUEST_TIMEOUT_S)
            if response.status_code != 200:
                raise RuntimeError(f"{label}: HTTP {response.status_code} {response.text[:200]}")
            report.answer(label, response.json()["predictions"][0])
        if ui_port is not None:
            show_storefront(report, predictor.url, ui_port)
    report.note("predictor stopped")
    return run


def show_storefront(report: DemoReport, predictor_url: str, port: int) -> None:
    """Serve the storefront for the demo's predictor until Ctrl-C (which stops the predictor too)."""
    from recsys.ui.server import serve

    report.stage("the storefront")
    report.note(f"storefront ready: open http://127.0.0.1:{port}/ in a browser (Ctrl-C stops it and the predictor)")
    serve(predictor_url, port, images_dir=get_settings().data_dir / "images")
