"""Retention: a finished run keeps its last N resumable states (its intermediate checkpoints); the older ones are
deleted once the run has been finished for a set time, never one that a registered model version, a family, an
analysis or any other plan points to, nor a declared output. A dry run lists what would go; the real run removes
exactly that, records each run's removals in the audit log, and deletes the objects only after the database no
longer refers to them (a crash in between leaves objects the sweep removes, never a reference to a missing one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, select

from service.archive.store import ArchiveStore
from service.archive.sweep import HEX, referenced
from service.audit.service import record
from service.models import Artifact, ModelVersion, Run, RunAttempt
from service.runs.state import FINAL
from service.timeutil import utcnow


@dataclass(frozen=True)
class Prunable:
    run_id: int
    sha256: str
    step: int
    size: int


def protected(session: Session) -> set[str]:
    """What retention never removes: declared outputs, versions' files (a family's experts too), and every digest
    a job plan names (an analysis of a checkpoint, a run resumed or fine-tuned from one)."""
    keep: set[str] = set(session.exec(select(Artifact.sha256)).all())
    for checkpoint, attribution, family in session.exec(select(ModelVersion.checkpoint_sha256,
                                                               ModelVersion.attribution_sha256,
                                                               ModelVersion.family)).all():
        keep.update((checkpoint, attribution))
        keep.update(HEX.findall(json.dumps(family or {})))
    for plan in session.exec(select(Run.job_plan)).all():
        keep.update(HEX.findall(json.dumps(plan or {})))
    return keep


def states_of(session: Session, run: Run) -> dict[str, tuple[int, int]]:
    """A run's resumable states in the archive: sha256 -> (step, size)."""
    found: dict[str, tuple[int, int]] = {}
    for attempt in session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)).all():
        if attempt.checkpoint_sha256:
            found.setdefault(attempt.checkpoint_sha256, (attempt.checkpoint_step, attempt.checkpoint_size))
        if attempt.verdict:  # a volunteer's states, once judged (before that, they are evidence)
            for step, sha, size in attempt.held_checkpoints or []:
                found.setdefault(str(sha), (int(step), int(size)))
    if run.resume_sha256:
        found.setdefault(run.resume_sha256, (run.resume_step, found.get(run.resume_sha256, (0, 0))[1]))
    return found


def plan(session: Session, *, keep: int, after_days: float, now: datetime | None = None) -> list[Prunable]:
    """What retention would remove now: each finished run's states beyond its newest `keep`, once it has been
    finished `after_days`."""
    cutoff = (now or utcnow()) - timedelta(days=after_days)
    safe = protected(session)
    out: list[Prunable] = []
    finished = session.exec(select(Run).where(Run.state.in_(FINAL), Run.finished_at.is_not(None),
                                              Run.finished_at <= cutoff).order_by(Run.id)).all()
    for run in finished:
        states = sorted(states_of(session, run).items(), key=lambda item: (item[1][0], item[0]), reverse=True)
        out += [Prunable(run.id, sha, step, size) for sha, (step, size) in states[keep:] if sha not in safe]
    return out


def prune(session: Session, store: ArchiveStore, *, keep: int, after_days: float, dry_run: bool,
          actor_name: str = "retention", now: datetime | None = None) -> list[Prunable]:
    """Remove what `plan` lists (or only list it, on a dry run)."""
    doomed = plan(session, keep=keep, after_days=after_days, now=now)
    if dry_run or not doomed:
        session.rollback()
        return doomed
    gone = {p.sha256 for p in doomed}
    for run_id in sorted({p.run_id for p in doomed}):
        run = session.get(Run, run_id)
        if run.resume_sha256 in gone:
            run.resume_sha256 = None
            session.add(run)
        for attempt in session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id)).all():
            if attempt.checkpoint_sha256 in gone:
                attempt.checkpoint_sha256, attempt.checkpoint_size = None, 0
            if attempt.resume_sha256 in gone:
                attempt.resume_sha256 = None
            if any(str(sha) in gone for _, sha, _ in attempt.held_checkpoints or []):
                attempt.held_checkpoints = [h for h in attempt.held_checkpoints if str(h[1]) not in gone]
            session.add(attempt)
        removed = [p for p in doomed if p.run_id == run_id]
        record(session, None, "archive.prune", f"run:{run_id}", by=actor_name, keep=keep, after_days=after_days,
               removed=[{"sha256": p.sha256, "step": p.step, "size": p.size} for p in removed],
               bytes=sum(p.size for p in removed))
    session.commit()
    still = referenced(session)  # another run's record naming the same bytes keeps them
    session.rollback()
    for sha in sorted(gone - still):
        store.delete(sha)
    return doomed
