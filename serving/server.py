"""The KServe ModelServer with the `recommender` model: its command-line options and `serve()`.

`python -m serving` (serving/__main__.py) and `recsys serve` both end in `serve()`. The parser extends
kserve.model_server.parser (every ModelServer flag works); gRPC is off by default so several predictors can share a
machine (`--enable_grpc true` turns it on).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import kserve
from kserve import model_server

from recsys.contract import SERVED_MODEL_NAME
from serving.model import RecommenderModel
from serving.routes import register_routes

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
parser.add_argument(
    "--access-log",
    "--access_log",
    dest="access_log",
    action="store_true",
    help="log every request (uvicorn.access and kserve.trace lines cost ~10%% of the CPU under load)",
)
parser.set_defaults(model_name=SERVED_MODEL_NAME, enable_grpc=False, enable_latency_logging=False)


def _configure_logging(access_log: bool) -> None:
    """Our loggers write through kserve's handlers; per-request lines only when asked for."""
    handlers = logging.getLogger("kserve").handlers
    for name in ("recsys", "serving"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = list(handlers)
        logger.propagate = not handlers
    if not access_log:
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)


def serve(model_dir: Path | None, http_port: int, args: argparse.Namespace | None = None) -> None:
    """Load the predictor and run the ModelServer until it is stopped."""
    args = args or parser.parse_args([])
    server = kserve.ModelServer(
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
