"""The readiness probe of the InferenceService keeps a replica out of traffic until its vectors are loaded.

A real predictor process starts on a database with Feast applied but no model published: the path the
manifest's probe asks answers 503 (as does KServe's per-model V2 readiness), while KServe's server-wide
/v2/health/ready already says ready — which is why the probe must not point there. After `publish`, the
predictor loads the vectors and the probe's path answers 200.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from serving_setup import (
    apply_and_materialize,
    copy_feature_repo,
    publish_model,
    settings_restored,
    train_model,
    use_settings,
)

from recsys import deploy
from recsys.contract import MODEL_STATUS_PATH
from recsys.predictor_process import free_loopback_port, predictor_command, stop

pytestmark = pytest.mark.e2e

MODEL_READY_V2 = "/v2/models/recommender/ready"
SERVER_READY_V2 = "/v2/health/ready"
LISTEN_TIMEOUT_S = 120
LOAD_TIMEOUT_S = 60


def get_when_listening(url: str, path: str, process: subprocess.Popen, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the predictor exited"
        try:
            return httpx.get(url + path, timeout=5)
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError(f"nothing listened at {url} within {timeout_s} s")


def test_probe_path_is_503_until_the_vectors_are_loaded(private_postgres, tiny_data: Path, tmp_path: Path) -> None:
    probe = deploy.inference_service_manifest("r", "ns", "img", "s3://b/m")["spec"]["predictor"]["containers"][0]
    assert probe["readinessProbe"]["httpGet"]["path"] == MODEL_STATUS_PATH != SERVER_READY_V2

    dsn = private_postgres.get_uri(database="postgres")
    repo = copy_feature_repo(tmp_path / "feature_repo", tiny_data)
    with settings_restored():
        use_settings(repo, dsn)
        model_dir = tmp_path / "model"
        train_model(tiny_data, model_dir, seed=7)
        apply_and_materialize(repo)
        port = free_loopback_port()
        url = f"http://127.0.0.1:{port}"
        with (tmp_path / "predictor.log").open("wb") as log:
            process = subprocess.Popen(
                predictor_command(model_dir, port), stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        try:
            before = get_when_listening(url, MODEL_STATUS_PATH, process, LISTEN_TIMEOUT_S)
            assert before.status_code == 503
            assert before.json()["ready"] is False and "no model_version is live" in before.json()["error"]
            assert httpx.get(url + MODEL_READY_V2, timeout=5).status_code == 503
            assert httpx.get(url + SERVER_READY_V2, timeout=5).status_code == 200  # server-wide: says nothing

            publish_model(model_dir, repo)
            deadline = time.monotonic() + LOAD_TIMEOUT_S
            while (after := httpx.get(url + MODEL_STATUS_PATH, timeout=5)).status_code != 200:
                assert time.monotonic() < deadline, after.text
                time.sleep(0.3)
            assert after.json() == {"name": "recommender", "ready": True}
            assert httpx.get(url + MODEL_READY_V2, timeout=5).status_code == 200
        finally:
            stop(process)
