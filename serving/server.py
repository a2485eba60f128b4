"""The KServe ModelServer with the `recommender` model: its command-line options and `serve()`.

`python -m serving` (serving/__main__.py) and `recsys serve` both end in `serve()`. The parser extends
kserve.model_server.parser (every ModelServer flag works); gRPC is off by default so several predictors can share a
machine (`--enable_grpc true` turns it on). It listens on 127.0.0.1 unless `--host` says otherwise (the
InferenceService passes 0.0.0.0): an unauthenticated predictor should not face a developer's network.

`--workers N` runs N serving processes on the one port (KServe's multi-process REST server): each loads the model
(pool, version poller, micro-batcher, query encoder) and registers our routes and middleware itself, since KServe
spawns them fresh (see _PredictorRESTServer). One Python process saturates at about one core, so N = the cores the
predictor may use.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kserve
from fastapi import FastAPI
from kserve import Model, model_server
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess
from kserve.protocol.rest.server import RESTServer

from recsys.contract import SERVED_MODEL_NAME
from serving.model import RecommenderModel
from serving.routes import register_routes
from serving.worker_metrics import add_worker_metrics_route, share_metrics_between_workers

DEFAULT_HOST = "127.0.0.1"
WORKER_START_GRACE_S = 180.0  # a spawned worker's first answer to KServe's liveness ping (imports; see below)
# run in every serving process before it serves: (KServe's app, the registered models)
WorkerSetUp = Callable[[FastAPI, list[Model]], None]

parser = argparse.ArgumentParser(
    prog="python -m serving", parents=[model_server.parser], description="KServe predictor of the recommender"
)
parser.add_argument(
    "--model-dir",
    "--model_dir",
    dest="model_dir",
    type=Path,
    default=None,
    help="model dir or model store to serve the live version from (default: RECSYS_MODEL_DIR, else the model store)",
)
parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s; 0.0.0.0 in a pod)")
parser.add_argument(
    "--access-log",
    "--access_log",
    dest="access_log",
    action="store_true",
    help="log every request (uvicorn.access and kserve.trace lines cost ~10%% of the CPU under load)",
)
parser.set_defaults(model_name=SERVED_MODEL_NAME, enable_grpc=False, enable_latency_logging=False)


class QuietRequestErrors(logging.Filter):
    """KServe logs every 4xx and 503 at ERROR with a traceback (a 30 s outage under 4 clients wrote 19 MB).

    A rejected request becomes one INFO line; a 503 none at all: the serving state logs each change of the
    database / model state once, which is what an operator needs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ModelNotReady):
            return False
        if isinstance(exc, InvalidInput | ModelNotFound):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = "request rejected: %s", (exc,), None, None
        return True


class _PredictorRESTServer(RESTServer):
    """KServe's REST server that runs `set_up(app, models)` where KServe sets up its own routes: in this process with
    one worker, in each worker process with several. KServe starts extra workers with multiprocessing *spawn*
    (kserve/protocol/rest/multiprocess/server.py): each re-imports `kserve.model_server:app` fresh and gets this
    server and the models pickled, so routes, middleware, log filters and threads made in the parent are not there.
    """

    def __init__(self, set_up: WorkerSetUp, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_up = set_up  # picklable (a module-level function or a partial of one)

    def create_application(self) -> None:
        models = list({id(m): m for m in self.dataplane.model_registry.get_models().values()}.values())
        self.set_up(model_server.app, models)  # before KServe's routes, so ours win where both match a path
        super().create_application()


class _WorkerSupervisor(RESTServerMultiProcess):
    """KServe's multi-process REST server, patient with workers that are still starting.

    KServe pings each worker every 0.5 s and kills (and respawns) one that does not answer within 5 s. A spawned
    worker answers only once it has imported what unpickling the model needs (KServe, torch, Feast: 7-9 s on a
    busy 2-core machine), so KServe alone killed and respawned every worker forever. Here a worker's first answer
    may take up to WORKER_START_GRACE_S (waited for in a thread); KServe's 5 s applies from then on.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answered: set[int | None] = set()  # pids of workers that answered a ping once

    async def keep_subprocess_alive(self, sockets: list[socket.socket]) -> None:
        for process in self._processes:
            starting = process.pid not in self._answered and not self.should_exit.is_set()
            if starting and await asyncio.to_thread(process.is_alive, WORKER_START_GRACE_S):
                self._answered.add(process.pid)
        await super().keep_subprocess_alive(sockets)


class _ModelServer(kserve.ModelServer):
    """kserve.ModelServer listening on `host` (KServe's REST server always binds 0.0.0.0) whose REST server runs
    `set_up` in every serving process (see _PredictorRESTServer)."""

    def __init__(self, host: str, set_up: WorkerSetUp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.set_up = set_up

    def start(self, models: list[Model]) -> None:
        """KServe's start() with our REST server in place of KServe's (the rest is KServe's: gRPC, loop, signals)."""
        self._register_and_check_atleast_one_model_is_ready(models)
        rest = _PredictorRESTServer(
            self.set_up,
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=self.workers,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        rest.config.host = self.host  # the parent binds the socket with it, also for spawned workers
        if self.workers > 1:
            self._rest_multiprocess_server = _WorkerSupervisor(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=self.workers,
                grace_period=self.grace_period,
                log_config_file=model_server.args.log_config_file,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_multiprocess_server._rest_server = rest  # what each spawned worker runs
            self.servers.append(self._rest_multiprocess_server.start())
        else:
            self._rest_server = rest
            self.servers.append(rest.start())
        if self.enable_grpc:
            self._grpc_server = GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(model_server.args),
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def configure_logging(access_log: bool) -> None:
    """Our loggers write through kserve's handlers; per-request lines only when asked for."""
    kserve_logger = logging.getLogger("kserve")
    if not any(isinstance(f, QuietRequestErrors) for f in kserve_logger.filters):
        kserve_logger.addFilter(QuietRequestErrors())
    handlers = kserve_logger.handlers
    for name in ("recsys", "serving"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = list(handlers)
        logger.propagate = not handlers
    # psycopg_pool warns at every reconnection attempt (4 a second while the database is down); the serving
    # state logs the outage once instead
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    if not access_log:
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)


def set_up_predictor(app: FastAPI, models: list[Model], access_log: bool = False) -> None:
    """In each serving process: logging, then each model's state (pool, poller, batcher, encoder), routes and
    middleware; the state is closed when that process shuts down."""
    configure_logging(access_log)
    add_worker_metrics_route(app)  # /metrics summed over the workers (serving/worker_metrics.py)
    for model in models:
        model.load()
        register_routes(app, model)  # every route and handler of ours: serving/routes.py
        app.router.on_shutdown.append(model.stop)


def serve(model_dir: Path | None, http_port: int, args: argparse.Namespace | None = None) -> None:
    """Run the predictor until it is stopped: `args.workers` processes, each loading the model."""
    args = args or parser.parse_args([])
    model = RecommenderModel(args.model_name, model_dir=model_dir)
    run_server(model, http_port, args, functools.partial(set_up_predictor, access_log=args.access_log))


def workers_problem(args: argparse.Namespace) -> str | None:
    """Why `args.workers` cannot be served (None if it can)."""
    if args.workers < 1:
        return f"--workers must be at least 1, got {args.workers}"
    if args.workers > 1 and args.enable_grpc:
        return "gRPC is served by the parent process only, which loads no model: use --workers 1 with --enable_grpc"
    return None


def run_server(model: Model, http_port: int, args: argparse.Namespace, set_up: WorkerSetUp) -> None:
    """Serve `model` with `set_up` run in every serving process (bench/noop_predictor.py serves its no-op so)."""
    if problem := workers_problem(args):
        raise ValueError(problem)
    server = _ModelServer(
        host=args.host,
        set_up=set_up,
        http_port=http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        workers=args.workers,
        enable_latency_logging=args.enable_latency_logging,
    )
    configure_logging(args.access_log)  # the parent's own lines; after ModelServer: it (re)configures logging
    if args.workers > 1:
        share_metrics_between_workers()  # before the workers spawn: they inherit the environment
    model.ready = True  # KServe registers only ready models; each serving process loads it in set_up
    server.start([model])
