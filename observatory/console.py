"""The CLI's console, and how a command fails: one line naming the problem, exit status 2, no traceback."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console(soft_wrap=True)  # lines stay whole when the output is not a terminal


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)
