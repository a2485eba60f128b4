"""`recsys models list|rollback`: the model store's versions, and a deliberate switch back to an earlier one."""

from __future__ import annotations

from typing import Annotated

import typer

from recsys.cli.output import console, fail

commands = typer.Typer(
    name="models", help="The model store: list the trained versions, roll back to one.", no_args_is_help=True
)


@commands.command("list")
def list_cmd() -> None:
    """Every stored model version: when it was trained, its test metrics, which one is live."""
    from recsys import db, model_store
    from recsys.cli.tables import models_table
    from recsys.vector_index import registry

    store = model_store.store_dir()
    models = model_store.list_models(store)
    if not models:
        console.print(f"the model store {store} is empty: `recsys train` adds models to it")
        return
    try:
        with db.connect() as conn:
            live = registry.live_model_version(conn)
    except db.DatabaseError as exc:
        console.print(f"live version unknown: {exc}")
        live = None
    console.print(models_table(models, live))
    console.print(f"model store: {store}")


@commands.command("rollback")
def rollback_cmd(
    version: Annotated[str, typer.Argument(help="the stored model_version to make live again (see `models list`)")],
) -> None:
    """Make an earlier model version live again (republished as the newest); a running predictor switches to it."""
    from recsys import db, feature_store, model_store
    from recsys.cli.tables import publish_table
    from recsys.publish import publish
    from recsys.vector_index import registry

    try:
        stored = model_store.get(version)
    except model_store.ModelStoreError as exc:
        fail(str(exc))
    try:
        with db.connect() as conn:
            live = registry.live_model_version(conn)
            if live == version:
                console.print(f"model {version} is already live")
                return
            registry.move_to_newest(conn, version)
        with console.status(f"rolling back from {live} to {version}: republishing"):
            report = publish(stored.path)
    except ValueError as exc:
        fail(str(exc))
    except (db.DatabaseError, feature_store.FeatureStoreError, registry.StaleModelVersionError) as exc:
        fail(str(exc), code=1)
    model_store.log_switch(model_store.store_dir(), live, version, "rollback")
    console.print(publish_table(report))
    console.print(f"rolled back: {version} is live again (was {live}); logged in {model_store.SWITCH_LOG}")
