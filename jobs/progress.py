"""Progress lines on stdout: the scheduler reads them from the job's Ray log, so no shared disk is needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jobs.outputs import sha256_of

PREFIX = "@@progress "
CHECKPOINT = "@@checkpoint "


def report(step: int, total: int, **detail: Any) -> None:
    """Print one progress line: fraction done plus whatever the job wants shown (loss, phase)."""
    record = {"step": step, "total": total, "fraction": round(step / total, 4) if total else 1.0, **detail}
    print(PREFIX + json.dumps(record, sort_keys=True), flush=True)
    sys.stdout.flush()


def checkpoint(step: int, state: Path | None = None) -> None:
    """Say that the resumable state on disk is now at `step` (with the sha256 of `state`, the file written): the
    runner ships it off the node, labelled with the step whose digest the file it opened has."""
    record: dict[str, Any] = {"step": step}
    if state is not None:
        record["sha256"] = sha256_of(state)[0]
    print(CHECKPOINT + json.dumps(record), flush=True)


def parse(line: str) -> tuple[str, dict[str, Any]] | None:
    """("progress" | "checkpoint", record) for a protocol line, None for anything else."""
    for kind, prefix in (("progress", PREFIX), ("checkpoint", CHECKPOINT)):
        if line.startswith(prefix):
            try:
                record = json.loads(line[len(prefix):])
            except json.JSONDecodeError:
                return None
            return (kind, record) if isinstance(record, dict) else None
    return None


def latest(log_text: str) -> dict[str, Any] | None:
    """The last well-formed progress record in a log, or None."""
    for line in reversed(log_text.splitlines()):
        if line.startswith(PREFIX):
            try:
                record = json.loads(line[len(PREFIX):])
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                return record
    return None
