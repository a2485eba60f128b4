"""`python -m serving --model-dir DIR --http_port 8080`: the KServe ModelServer with the `recommender` model.

The parser extends kserve.model_server.parser (every ModelServer flag works); gRPC is off by default so several
predictors can share a machine (`--enable_grpc true` turns it on).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import kserve
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from kserve import model_server

from serving.model import MODEL_NAME, RecommenderModel

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
parser.set_defaults(model_name=MODEL_NAME, enable_grpc=False, enable_latency_logging=False)


async def _bad_request_body(_: Request, exc: RequestValidationError) -> ORJSONResponse:
    """FastAPI's body validation (V2 JSON) answers 400 {"error": ...} like every other bad input."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return ORJSONResponse(status_code=400, content={"error": f"{where}: {first.get('msg', 'invalid request')}"})


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
    model_server.app.add_exception_handler(RequestValidationError, _bad_request_body)
    server.start([model])


def main(argv: Sequence[str] | None = None) -> None:
    args = parser.parse_args(argv)
    serve(args.model_dir, args.http_port, args)


if __name__ == "__main__":
    main()
