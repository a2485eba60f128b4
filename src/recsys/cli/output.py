"""The console every command prints to, and `fail`: the one way a command reports an error and exits."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()  # writes to sys.stdout as it is at print time (CliRunner swaps it in tests)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear one-line error and exit (2 = bad input, 1 = the operation failed)."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
