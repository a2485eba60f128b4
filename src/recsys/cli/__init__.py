"""`recsys`: the command line. A thin shell: every command parses flags and calls one plain function.

The command line is the top of the house: the only part of `recsys` that may import `components`, `pipelines`
and `serving`. Long imports (torch, feast, kfp, kserve) happen inside the commands so `recsys --help` stays fast.
Bad arguments exit with code 2 and a one-line message (`recsys.cli.output.fail`); a failed operation exits 1.

Layout: one module per command group, each with a module-level `commands = typer.Typer(...)`:
  db.py        recsys db start|stop|status|url
  feast.py     recsys feast apply|materialize|env
  data.py      recsys generate, recsys images
  importers.py recsys import movielens (public data sets into the parquet schema)
  model.py     recsys train, evaluate, publish
  models.py    recsys models list|rollback (the model store)
  serve.py     recsys serve, recommend, search, similar (one answer path)
  events.py    recsys events add|load|export (user events; export merges the log into a data set)
  ui.py        recsys ui (the storefront page over a running predictor)
  pipeline.py  recsys pipeline compile|run|submit, recsys demo
  tables.py    every table the CLI prints;  output.py  the console and `fail`

To add commands: write `recsys/cli/<topic>.py` with `commands = typer.Typer(name="<group>", help=...,
no_args_is_help=True)` for a group (`recsys <group> <command>`), or `commands = typer.Typer()` for top-level
commands (`recsys <command>`); decorate functions with `@commands.command("<name>")`; then add the module to
COMMAND_MODULES below (its place there is its place in `recsys --help`).
"""

from __future__ import annotations

import typer

from recsys.cli import data, db, events, feast, importers, model, models, pipeline, serve, ui

COMMAND_MODULES = (db, data, importers, feast, model, models, serve, events, ui, pipeline)

app = typer.Typer(
    name="recsys",
    help="Two-tower product recommender on Feast + pgvector, KServe and Kubeflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich markup would swallow every "[default: ...]" in an option's help
    context_settings={"max_content_width": 120},
)
for module in COMMAND_MODULES:
    app.add_typer(module.commands)
