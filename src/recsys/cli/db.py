"""`recsys db start|stop|status|url`: the embedded PostgreSQL + pgvector."""

from __future__ import annotations

import json

import typer

from recsys.cli.output import console, fail

commands = typer.Typer(
    name="db", help="Embedded PostgreSQL + pgvector (ignored when RECSYS_PG_DSN is set).", no_args_is_help=True
)


@commands.command("start")
def db_start() -> None:
    """Start the embedded Postgres (or check RECSYS_PG_DSN) and create the vector extension."""
    from recsys import db

    try:
        target = db.start()
    except db.DatabaseError as exc:
        fail(str(exc), code=1)
    console.print(f"PostgreSQL ready: {db.redacted(target)}")


@commands.command("stop")
def db_stop() -> None:
    """Stop the embedded Postgres (never an external one)."""
    from recsys import db

    console.print("stopped" if db.stop() else "not running (or external server: left alone)")


@commands.command("status")
def db_status() -> None:
    """Print whether the database answers, with server and pgvector versions; exit 1 when it does not."""
    from recsys import db

    status = db.status()
    console.print_json(json.dumps(status))
    if not status["running"]:
        hint = " (start it with `recsys db start`)" if status["embedded"] else ""
        fail(f"{status.get('error') or 'the database is not running'}{hint}", code=1)


@commands.command("url")
def db_url() -> None:
    """Print the connection string (password redacted), starting the embedded server if needed."""
    from recsys import db

    try:
        print(db.redacted(db.dsn()))
    except db.DatabaseError as exc:
        fail(str(exc), code=1)
