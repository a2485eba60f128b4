"""The KServe ModelServer with the `recommender` model: its command-line options and `serve()`.

`python -m serving` (serving/__main__.py) and `recsys serve` both end in `serve()`. The parser extends
kserve.model_server.parser (every ModelServer flag works); gRPC is off by default so several predictors can share a
machine (`--enable_grpc true` turns it on). It listens on 127.0.0.1 unless `--host` says otherwise (the
InferenceService passes 0.0.0.0): an unauthenticated predictor should not face a developer's network.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import kserve
from kserve import model_server
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

from recsys.contract import SERVED_MODEL_NAME
from serving.model import RecommenderModel
from serving.routes import register_routes

DEFAULT_HOST = "127.0.0.1"

parser = argparse.ArgumentParser(
    prog="python -m serving", parents=[model_server.parser], description="KServe predictor of the recommender"
)
parser.add_argument(
    "--model-dir",
    "--model_dir",
    dest="model_dir",
    type=Path,
    default=None,
    help="trained model dir (default: RECSYS_MODEL_DIR / .recsys/model)",
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


class _ModelServer(kserve.ModelServer):
    """kserve.ModelServer listening on `host` (KServe's REST server always binds 0.0.0.0); one worker process."""

    def __init__(self, host: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.host = host

    def setup_event_loop(self) -> None:
        # start() has built the REST server (its uvicorn.Config) and calls this before the socket is bound
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
        super().setup_event_loop()


def _configure_logging(access_log: bool) -> None:
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


def serve(model_dir: Path | None, http_port: int, args: argparse.Namespace | None = None) -> None:
    """Load the predictor and run the ModelServer until it is stopped."""
    args = args or parser.parse_args([])
    server = _ModelServer(
        host=args.host,
        http_port=http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        workers=1,
        enable_latency_logging=args.enable_latency_logging,
    )
    _configure_logging(args.access_log)  # after ModelServer: its constructor (re)configures logging
    model = RecommenderModel(args.model_name, model_dir=model_dir)
    model.load()
    register_routes(model_server.app, model)  # every route and handler of ours: serving/routes.py
    server.start([model])
