"""The console every command prints to, and `fail`: the one way a command reports an error and exits."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

console = Console(soft_wrap=True)  # stdout as it is at print time (CliRunner swaps it); lines never cut


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear one-line error and exit (2 = bad input, 1 = the operation failed)."""
    # soft_wrap: one line however narrow the terminal; Text: a "[...]" in the message is not markup
    Console(stderr=True, soft_wrap=True).print(Text("error: ", style="bold red") + Text(message), highlight=False)
    raise typer.Exit(code)


def setting_default(name: str) -> str:
    """'[default: VALUE, env RECSYS_NAME]' for an option that falls back to a Settings field (help shows both)."""
    from recsys.config import Settings

    value = Settings.model_fields[name].default
    if isinstance(value, Path):
        value = value.relative_to(Path.cwd()) if value.is_relative_to(Path.cwd()) else value
    return f"[default: {value}, env RECSYS_{name.upper()}]"
