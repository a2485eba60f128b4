"""`recsys feast apply|register|materialize|env`: the Feast feature repo (feature_repo/)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.output import console, fail, setting_default

commands = typer.Typer(name="feast", help="The Feast feature repo (feature_repo/).", no_args_is_help=True)

FeatureRepo = Annotated[Path | None, typer.Option(help=f"feature repo folder {setting_default('feature_repo')}")]


@contextmanager
def _feast_errors() -> Iterator[None]:
    """A feature repo problem is bad input (exit 2); an unreachable database is a failed operation (exit 1)."""
    from recsys import db, feature_store

    try:
        yield
    except feature_store.FeatureStoreError as exc:
        fail(str(exc))
    except db.DatabaseError as exc:
        fail(str(exc), code=1)


@commands.command("apply")
def feast_apply(repo: FeatureRepo = None) -> None:
    """Create the vector extension and register entities, sources, the seven views and the services."""
    from recsys import feature_store

    with _feast_errors(), console.status("feast apply"):
        deployed = feature_store.apply(repo)
    for line in deployed:
        kind, _, name = line.rpartition(" ")
        console.print(f"Deployed {kind} [bold green]{name}[/]")


@commands.command("register")
def feast_register(repo: FeatureRepo = None) -> None:
    """Write the definitions into the repo's registry file only (no database writes): for readers such as the
    predictor in a cluster, whose database role may only read; `apply` (the feast-apply Job) made the tables."""
    from recsys import feature_store

    with _feast_errors():
        feature_store.register(repo)


@commands.command("materialize")
def feast_materialize(repo: FeatureRepo = None) -> None:
    """Load item_features and user_features into the online store (idempotent)."""
    from recsys import feature_store

    with _feast_errors(), console.status("feast materialize: item_features, user_features"):
        counts = feature_store.materialize(repo)
    for view, count in counts.items():
        console.print(f"{view}: {count:,} entities online")


@commands.command("env")
def feast_env() -> None:
    """Print `export` lines for the ${VAR}s of feature_store.yaml: `eval "$(recsys feast env)"; feast apply`."""
    import shlex

    from recsys import db, feature_store

    try:
        env = feature_store.feast_env()
        db.connect().close()  # CREATE EXTENSION vector: plain `feast apply` creates vector columns, not the type
    except db.DatabaseError as exc:
        fail(str(exc), code=1)
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
