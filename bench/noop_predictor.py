"""A no-op KServe predictor: the serving stack's ceiling for bench/serve.py.

`python -m bench.noop_predictor --answer FILE --http_port P [--workers N]` serves the model `recommender` through
the same server as `python -m serving` (serving.server.run_server: KServe's ModelServer, the same worker
processes, our request middleware and log settings), but its predict returns the constant V1 body in FILE (one
real answer of the recommender, so the response is as large as ours). The benchmark drives both with the same
clients in the same run; our throughput over the no-op's is the share of the stack's ceiling we reach.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from kserve import Model

from serving.routes import add_request_handling
from serving.server import configure_logging, parser, run_server, workers_problem

noop_parser = argparse.ArgumentParser(
    prog="python -m bench.noop_predictor", parents=[parser], add_help=False, conflict_handler="resolve"
)
noop_parser.add_argument("--answer", type=Path, required=True, help="JSON file: the V1 body every predict returns")


class NoopModel(Model):
    """Answers every predict with the same body, doing no work."""

    def __init__(self, name: str, answer: dict[str, Any]):
        super().__init__(name)
        self.answer = answer

    def load(self) -> bool:
        self.ready = True
        return self.ready

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return self.answer


def set_up_noop(app: FastAPI, models: list[Model]) -> None:
    """What serving.server.set_up_predictor does per process, minus the recommender's own routes."""
    configure_logging(access_log=False)
    add_request_handling(app)
    for model in models:
        model.load()


def main(argv: Sequence[str] | None = None) -> None:
    args = noop_parser.parse_args(argv)
    if problem := workers_problem(args):
        noop_parser.error(problem)
    model = NoopModel(args.model_name, json.loads(args.answer.read_text()))
    run_server(model, args.http_port, args, set_up_noop)


if __name__ == "__main__":
    main()
