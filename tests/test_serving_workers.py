"""`python -m serving --workers 2`: every route kind answers from every worker process.

KServe spawns its workers fresh (multiprocessing spawn): each re-imports KServe's app and gets the model pickled,
so a route, middleware, log filter or thread made in the parent only would be missing there. This test starts
two workers with the access log on (each line names the worker's pid), sends each route kind over many
connections until both workers have answered each, and checks the answers: V1 recommend and search, V2 infer,
events, browse, readiness, /metrics (with the model_version gauge only a loaded worker has, and counters summed
over the workers), 405 and 413 from our routes and middleware. Then the server stops and both workers are gone.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pandas as pd
import psutil
import pytest
from serving_setup import ROOT, SERVER_START_TIMEOUT_S, copy_feature_repo, settings_restored, setup_published

from recsys import schema
from recsys.contract import CATEGORIES_PATH, EVENTS_PATH, INFER_PATH, MODEL_STATUS_PATH, PREDICT_PATH, USERS_PATH
from recsys.predictor_process import RunningPredictor, running_predictor

pytestmark = pytest.mark.e2e

WORKERS = 2
CONNECTIONS_PER_ROUND = 6  # concurrent connections: while one worker is busy the other accepts
MAX_ROUNDS = 30
# uvicorn.access line (KServe's format): `... 127.0.0.1:PORT PID - "GET /path HTTP/1.1" 200`
ACCESS_LINE = re.compile(r'uvicorn\.access .* (\d+) - "(\w+) (\S+) HTTP/1\.1" (\d+)')
CHILD_LINE = re.compile(r"Started child process \[(\d+)\]")


@pytest.fixture(scope="module")
def setup(pg_dsn: str, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("workers")
    repo = copy_feature_repo(root / "feature_repo", tiny_data)
    with settings_restored():
        version = setup_published(tiny_data, repo, root / "model", seed=401)
        users = pd.read_parquet(tiny_data / schema.USERS_FILE)[schema.USER_ID].tolist()
        items = pd.read_parquet(tiny_data / schema.ITEMS_FILE)[schema.ITEM_ID].tolist()
        yield {"root": root, "model": root / "model", "version": version, "users": users, "items": items}


@pytest.fixture(scope="module")
def server(setup: dict) -> Iterator[RunningPredictor]:
    with running_predictor(
        setup["model"],
        setup["root"] / "predictor.log",
        cwd=ROOT,
        args=["--workers", str(WORKERS), "--access-log"],
        ready_timeout_s=SERVER_START_TIMEOUT_S * WORKERS,
    ) as running:
        yield running


def route_checks(setup: dict) -> dict[str, Callable[[httpx.Client, int], None]]:
    """Route kind -> a call that asserts its answer (the access log says which worker gave it)."""
    users, items, version = setup["users"], setup["items"], setup["version"]

    def recommend(client: httpx.Client, n: int) -> None:
        answer = client.post(PREDICT_PATH, json={"instances": [{"user_id": users[n % len(users)], "k": 5}]})
        assert answer.status_code == 200, answer.text
        [prediction] = answer.json()["predictions"]
        assert len(prediction["items"]) == 5 and prediction["model_version"] == version

    def search(client: httpx.Client, n: int) -> None:
        answer = client.post(PREDICT_PATH, json={"instances": [{"query": "wireless headphones", "k": 3}]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"][0]["items"]) == 3

    def infer(client: httpx.Client, n: int) -> None:
        body = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [users[n % len(users)]]}]}
        answer = client.post(INFER_PATH, json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_name"] == "recommender"

    def events(client: httpx.Client, n: int) -> None:
        event = {"event_id": f"workers-{n}-{time.monotonic_ns()}", "user_id": users[n % len(users)],
                 "item_id": items[n % len(items)], "interaction_type": schema.POSITIVE_VIEW}  # fmt: skip
        answer = client.post(EVENTS_PATH, json={"events": [event]})
        assert (answer.status_code, answer.json()["accepted"]) == (200, 1), answer.text

    def browse(client: httpx.Client, n: int) -> None:
        answer = client.get(f"{USERS_PATH}/{users[n % len(users)]}")
        assert answer.status_code == 200 and answer.json()[schema.USER_ID] == users[n % len(users)], answer.text
        assert client.get(CATEGORIES_PATH).json()["categories"]

    def readiness(client: httpx.Client, n: int) -> None:
        answer = client.get(MODEL_STATUS_PATH)
        assert (answer.status_code, answer.json()["ready"]) == (200, True)

    def metrics(client: httpx.Client, n: int) -> None:
        text = client.get("/metrics").text
        assert f'recsys_model_version{{model_version="{version}"}} 1.0' in text  # the worker loaded the model

    def wrong_method(client: httpx.Client, n: int) -> None:
        answer = client.get(PREDICT_PATH)
        assert (answer.status_code, answer.headers["allow"]) == (405, "POST")

    def too_large(client: httpx.Client, n: int) -> None:
        answer = client.post(
            PREDICT_PATH, content=b" " * (5 * 1024 * 1024), headers={"content-type": "application/json"}
        )
        assert answer.status_code == 413 and "larger than" in answer.json()["error"]

    return {
        "recommend": recommend, "search": search, "infer": infer, "events": events, "browse": browse,
        "readiness": readiness, "metrics": metrics, "wrong_method": wrong_method, "too_large": too_large,
    }  # fmt: skip


def kind_of(method: str, quoted_path: str, status: int) -> str | None:
    """The route kind of an access-log line (None for lines no check sends)."""
    path = unquote(quoted_path)  # httpx sends the ':' of ':predict' as %3A
    if path == PREDICT_PATH and method == "POST":
        return "too_large" if status == 413 else "recommend/search"
    return {
        ("GET", PREDICT_PATH): "wrong_method",
        ("POST", INFER_PATH): "infer",
        ("POST", EVENTS_PATH): "events",
        ("GET", CATEGORIES_PATH): "browse",
        ("GET", MODEL_STATUS_PATH): "readiness",
        ("GET", "/metrics"): "metrics",
    }.get((method, path))


def served_by_worker(log_path: Path) -> dict[int, set[str]]:
    served: dict[int, set[str]] = {}
    for pid, method, path, status in ACCESS_LINE.findall(log_path.read_text(errors="replace")):
        kind = kind_of(method, path, int(status))
        if kind is not None:
            served.setdefault(int(pid), set()).add(kind)
    return served


def test_every_route_kind_answers_from_every_worker(server: RunningPredictor, setup: dict) -> None:
    log_text = server.log_path.read_text(errors="replace")
    children = {int(pid) for pid in CHILD_LINE.findall(log_text)}
    assert len(children) == WORKERS, log_text[-3000:]
    checks = route_checks(setup)
    expected = {"recommend/search", "infer", "events", "browse", "readiness", "metrics", "wrong_method", "too_large"}
    failures: list[BaseException] = []

    def one_connection(n: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for check in checks.values():
                    check(client, n)
        except BaseException as exc:  # reported below, with the round it happened in
            failures.append(exc)

    served: dict[int, set[str]] = {}
    rounds = 0
    for round_ in range(MAX_ROUNDS):
        rounds += 1
        threads = [
            threading.Thread(target=one_connection, args=(round_ * CONNECTIONS_PER_ROUND + i,))
            for i in range(CONNECTIONS_PER_ROUND)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures[0]
        served = served_by_worker(server.log_path)
        if set(served) == children and all(kinds == expected for kinds in served.values()):
            break
    assert set(served) == children, f"only workers {sorted(served)} of {sorted(children)} answered"
    for pid, kinds in served.items():
        assert kinds == expected, f"worker {pid} never answered {sorted(expected - kinds)}"
    log_text = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text[-3000:]
    # /metrics sums the workers: every recommend call (V1 and V2) counted once, whichever worker answers the scrape
    recommends = 2 * rounds * CONNECTIONS_PER_ROUND
    for _ in range(4):
        text = httpx.get(server.url + "/metrics", timeout=10).text
        counted = [line for line in text.splitlines() if line.startswith("recsys_requests_total")]
        assert f'recsys_requests_total{{kind="recommend",status="200"}} {float(recommends)}' in counted, counted


def test_stopping_the_server_ends_every_worker(setup: dict) -> None:
    with running_predictor(
        setup["model"],
        setup["root"] / "stopped.log",
        cwd=ROOT,
        args=["--workers", str(WORKERS)],
        ready_timeout_s=SERVER_START_TIMEOUT_S * WORKERS,
    ) as running:
        children = psutil.Process(running.process.pid).children(recursive=True)
        workers = [c for c in children if "multiprocessing" in " ".join(c.cmdline())]
        assert len(workers) >= WORKERS, [c.cmdline() for c in children]
    assert running.process.returncode is not None
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.pid for p in alive]
