"""`recsys`: the command line. A thin shell: every command parses flags and calls one plain function.

Long imports (torch, feast, kfp, kserve) happen inside the commands so `recsys --help` stays fast.
Bad arguments exit with code 2 and a one-line message (typer.BadParameter / `fail`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from recsys.config import get_settings

app = typer.Typer(name="recsys", help="Two-tower product recommender on Feast + pgvector, KServe and Kubeflow.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Embedded PostgreSQL + pgvector (ignored when RECSYS_PG_DSN is set).", no_args_is_help=True)
feast_app = typer.Typer(help="The Feast feature repo (feature_repo/).", no_args_is_help=True)
pipeline_app = typer.Typer(help="The Kubeflow pipeline: compile, run locally (kfp.local), submit.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(feast_app, name="feast")
app.add_typer(pipeline_app, name="pipeline")

console = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear one-line error and exit (2 = bad input, 1 = the operation failed)."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


# ------------------------------------------------------------------------------------------- db
@db_app.command("start")
def db_start() -> None:
    """Start the embedded Postgres (or check RECSYS_PG_DSN) and create the vector extension."""
    from recsys import db

    try:
        target = db.start()
    except db.DatabaseError as exc:
        fail(str(exc), code=1)
    console.print(f"PostgreSQL ready: {db.redacted(target)}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded Postgres (never an external one)."""
    from recsys import db

    console.print("stopped" if db.stop() else "not running (or external server: left alone)")


@db_app.command("status")
def db_status() -> None:
    """Print whether the database answers, with server and pgvector versions."""
    from recsys import db

    console.print_json(json.dumps(db.status()))


@db_app.command("url")
def db_url() -> None:
    """Print the connection string (password redacted), starting the embedded server if needed."""
    from recsys import db

    try:
        print(db.redacted(db.dsn()))
    except db.DatabaseError as exc:
        fail(str(exc), code=1)
