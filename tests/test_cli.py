"""The command line's shape and its one answer path for recommend / search / similar (recsys.cli.serve).

The predictor here is a stub HTTP server that answers with a fixed status and body: these tests are about how
the CLI maps the predictor's answers to exit codes and messages; the real predictor is tested in test_serving.py
and test_search.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.contract import PREDICT_PATH
from recsys.predictor_process import free_loopback_port

pytestmark = pytest.mark.unit

CLIENT_COMMANDS = {
    "recommend": ["recommend", "--user-id", "u1"],
    "search": ["search", "tents"],
    "similar": ["similar", "--item-id", "i1"],
}


class StubPredictor(BaseHTTPRequestHandler):
    """Answers every POST with the server's `answer` (status, JSON body) and keeps the bodies it received."""

    def do_POST(self) -> None:
        self.server.received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        status, body = self.server.answer
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture()
def stub() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubPredictor)
    server.received, server.answer = [], (200, {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_table_by_default(stub: ThreadingHTTPServer) -> None:
    prediction = {"model_version": "v1", "items": [{"item_id": "i9", "score": 0.5, "product_name": "Tent"}]}
    stub.answer = (200, {"predictions": [prediction]})
    result = CliRunner().invoke(app, [*CLIENT_COMMANDS["recommend"], "--device", "mobile", "--url", url_of(stub)])
    assert result.exit_code == 0, result.output
    assert "rank" in result.output and "Tent" in result.output and "model v1" in result.output
    [(_, body)] = stub.received
    assert body["instances"][0]["context"] == {"device": "mobile"}


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    commands = ("db", "feast", "generate", "images", "train", "evaluate", "publish", "models", "serve", "recommend")
    for command in (*commands, "search", "similar", "pipeline", "demo"):
        assert f" {command} " in result.output, command


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_the_predictors_answer_is_printed(stub: ThreadingHTTPServer, command: str) -> None:
    prediction = {"model_version": "v1", "items": [{"item_id": "i9", "score": 0.5}]}
    stub.answer = (200, {"predictions": [prediction]})
    args = [
        *CLIENT_COMMANDS[command],
        "--json",
        "--k",
        "3",
        "--timestamp",
        "2030-01-01T00:00:00Z",
        "--url",
        url_of(stub),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == prediction
    [(path, body)] = stub.received
    assert path == PREDICT_PATH
    [instance] = body["instances"]
    assert instance["k"] == 3 and instance["context"] == {"timestamp": "2030-01-01T00:00:00Z"}


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_a_400_is_bad_input_with_the_predictors_message(stub: ThreadingHTTPServer, command: str) -> None:
    stub.answer = (400, {"error": "instances[0].item_id: unknown item 'i1'"})
    result = CliRunner().invoke(app, [*CLIENT_COMMANDS[command], "--url", url_of(stub)])
    assert result.exit_code == 2
    assert "instances[0].item_id: unknown item 'i1'" in result.output and "400" not in result.output


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_a_503_or_no_server_is_a_failed_operation(stub: ThreadingHTTPServer, command: str) -> None:
    stub.answer = (503, {"error": "not ready"})
    result = CliRunner().invoke(app, [*CLIENT_COMMANDS[command], "--url", url_of(stub)])
    assert result.exit_code == 1 and "503" in result.output
    nobody = f"http://127.0.0.1:{free_loopback_port()}"
    result = CliRunner().invoke(app, [*CLIENT_COMMANDS[command], "--url", nobody])
    assert result.exit_code == 1 and f"cannot reach {nobody}" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["recommend", "--user-id", "u1", "--k", "0"], "--k"),
        (["recommend"], "--user-id"),
        (["search", "tents", "--timestamp", "yesterday"], "--timestamp"),
    ],
)
def test_bad_input_is_caught_before_any_request(stub: ThreadingHTTPServer, args: list[str], field: str) -> None:
    result = CliRunner().invoke(app, [*args, "--url", url_of(stub)])
    assert result.exit_code == 2 and field in result.output
    assert stub.received == []
