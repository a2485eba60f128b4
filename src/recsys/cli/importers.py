"""`recsys import movielens SRC --out DIR`: public data sets into the project's three parquet files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.output import console, fail, setting_default
from recsys.config import get_settings

commands = typer.Typer(name="import", help="Import a public data set into the parquet schema.", no_args_is_help=True)


@commands.command("movielens")
def movielens_cmd(
    src: Annotated[
        Path,
        typer.Argument(
            help="GroupLens ml-100k folder or zip (u.data, u.item, u.user), or RecBole's atomic files "
            "(ml-100k.inter, .item, .user) in a folder or zip, e.g. the recbole wheel"
        ),
    ],
    out: Annotated[Path | None, typer.Option(help=f"output folder {setting_default('data_dir')}")] = None,
) -> None:
    """Write MovieLens-100K as users, items and interactions: every rating a purchase, genres as categories."""
    from recsys.cli.tables import import_table
    from recsys.data.movielens import MovieLensFormatError, import_movielens

    target = out or get_settings().data_dir
    try:
        report = import_movielens(src, target)
    except MovieLensFormatError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}", code=1)
    console.print(import_table(report, target))
    console.print(f"train on it: recsys train --data {target} --split random", highlight=False)
