"""`GET /metrics` across worker processes: with `--workers N`, each worker counts in its own memory, and a scrape
lands on whichever worker accepts the connection, so counters would jump between workers' values.

prometheus_client's multiprocess mode fixes that: `share_metrics_between_workers()` (in the parent, before KServe
spawns the workers, which inherit the environment) names a fresh folder where every worker's metrics keep their
values (always a fresh one: importing Feast points PROMETHEUS_MULTIPROC_DIR at a folder of its own, which any
process started from that one would inherit and share), and `add_worker_metrics_route(app)` (in each worker, before KServe's routes)
serves the sum over all workers plus the served-version gauges of the answering worker. With one worker nothing
changes: KServe's own /metrics serves the process's registry.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, exposition, multiprocess

from recsys import metrics

WORKER_METRICS_DIR_ENV = "RECSYS_WORKER_METRICS_DIR"  # ours: set only by a server with several workers
# prometheus_client reads both names (value files / MultiProcessCollector); Feast sets them on import
PROMETHEUS_DIR_ENVS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def share_metrics_between_workers() -> None:
    """A fresh folder for this server's worker metric files (removed at exit)."""
    folder = tempfile.mkdtemp(prefix="recsys-metrics-")
    atexit.register(shutil.rmtree, folder, True)
    for name in (WORKER_METRICS_DIR_ENV, *PROMETHEUS_DIR_ENVS):
        os.environ[name] = folder


def add_worker_metrics_route(app: FastAPI) -> None:
    """`GET /metrics` summed over the workers; nothing when this process is not one of several."""
    if not os.environ.get(WORKER_METRICS_DIR_ENV):
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(metrics.SERVED_VERSION)  # read at scrape time from this worker's state

    async def worker_metrics(request: Request) -> Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
        return Response(content=encoder(registry), headers={"content-type": content_type})

    app.add_api_route("/metrics", worker_metrics, methods=["GET"])
