"""`python -m serving --model-dir DIR --http_port 8080`: run the predictor (see serving.server)."""

from __future__ import annotations

from collections.abc import Sequence

from recsys.model_store import ModelStoreError, serving_dir
from serving.server import parser, serve, workers_problem


def main(argv: Sequence[str] | None = None) -> None:
    args = parser.parse_args(argv)
    if problem := workers_problem(args):
        parser.error(problem)
    try:
        model_dir = serving_dir(args.model_dir)
    except ModelStoreError as exc:  # one line, before the server starts: not a predictor that is never ready
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    serve(model_dir, args.http_port, args)


if __name__ == "__main__":
    main()
