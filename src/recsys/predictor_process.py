"""Start the KServe predictor in a subprocess on a free loopback port, wait until it is ready, stop it.

The demo, the tests and the benchmark all run the predictor this way. The child is started by module name
(`python -m serving`) or through the CLI (`recsys serve`), so this module imports nothing of the serving layer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from recsys.contract import MODEL_STATUS_PATH

READY_TIMEOUT_S = 120.0  # loading the model, the item catalogue and the query encoder
STOP_TIMEOUT_S = 15.0  # after SIGTERM, before SIGKILL
READY_POLL_S = 0.3
LOG_TAIL_CHARS = 4000


class PredictorStartError(RuntimeError):
    """The predictor exited or did not become ready in time; the message holds the tail of its log."""


@dataclass(frozen=True)
class RunningPredictor:
    """A predictor process that answered its readiness check."""

    url: str  # http://127.0.0.1:PORT
    port: int
    process: subprocess.Popen
    log_path: Path


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def predictor_command(
    model_dir: Path, port: int, via_cli: bool = False, args: Sequence[str] = (), module: str = "serving"
) -> list[str]:
    """`python -m serving ...` (or another module taking the same options, e.g. the benchmark's no-op), or
    `recsys serve ...` (the console script next to this interpreter); `args` are appended (e.g. --workers 2)."""
    if via_cli:
        recsys = Path(sys.executable).with_name("recsys")
        return [str(recsys), "serve", "--model-dir", str(model_dir), "--http-port", str(port), *args]
    return [sys.executable, "-m", module, "--model-dir", str(model_dir), "--http_port", str(port), *args]


@contextmanager
def running_predictor(
    model_dir: Path,
    log_path: Path,
    *,
    port: int | None = None,
    via_cli: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    args: Sequence[str] = (),
    module: str = "serving",
) -> Iterator[RunningPredictor]:
    """Run a predictor until the block ends; yields it once it answers. Output goes to `log_path`.

    `env` adds to (or overrides) this process's environment; `args` and `module` go to predictor_command.
    Raises PredictorStartError when it does not start.
    """
    port = port if port is not None else free_loopback_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            predictor_command(model_dir, port, via_cli, args, module),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    running = RunningPredictor(url=f"http://127.0.0.1:{port}", port=port, process=process, log_path=log_path)
    try:
        wait_until_ready(running, ready_timeout_s)
        yield running
    finally:
        stop(process)


def wait_until_ready(predictor: RunningPredictor, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the model status endpoint until it answers 200; fail early when the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = predictor.process.poll()
        if code is not None:
            raise PredictorStartError(f"the predictor exited with code {code}:\n{_log_tail(predictor.log_path)}")
        try:
            if httpx.get(predictor.url + MODEL_STATUS_PATH, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(READY_POLL_S)
    raise PredictorStartError(
        f"the predictor at {predictor.url} was not ready after {timeout_s:.0f} s:\n{_log_tail(predictor.log_path)}"
    )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (the server closes its database pool), then SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _log_tail(log_path: Path) -> str:
    try:
        return log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError as exc:
        return f"(no log at {log_path}: {exc.strerror})"
