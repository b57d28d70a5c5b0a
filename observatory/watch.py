"""A terminal progress bar for one run, read from the database the scheduler writes to."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.models import Run
from service.runs.state import FINAL


def watch_run(engine: Engine, run_id: int, console: Console, stop: threading.Event, url: str) -> None:
    """Show the run's progress until it ends (or `stop` is set), then say where its outputs are."""
    columns = (TextColumn("run {task.fields[run]} · {task.fields[state]}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}% {task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("run", total=1.0, run=run_id, state="queued", detail="")
        while not stop.wait(1.0):
            with Session(engine) as session:
                run = session.get(Run, run_id)
            detail = run.progress_detail
            text = f"{detail.get('phase', '')} step {detail['step']}/{detail['total']}" if "step" in detail else ""
            if "loss" in detail:
                text += f" · loss {detail['loss']}"
            progress.update(task, completed=run.progress, state=str(run.state), detail=text)
            if run.state in FINAL:
                break
    if not stop.is_set():
        console.print(f"run {run_id} {run.state}: {run.message} — {url}/runs/{run_id}")
