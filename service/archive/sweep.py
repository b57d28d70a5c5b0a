"""The archive's sweep: objects nothing refers to any more (an output sent again, a checkpoint superseded by a later
one, an upload that was refused after it was stored) are deleted once they are older than a grace period.

Mark and sweep: every sha256 the database names anywhere (outputs, resume and shipped checkpoints, model versions,
dataset versions' files, and any digest pinned in a job plan) is kept; every other object older than the grace is
deleted. The grace covers an upload between its put and the transaction that records it: a put of bytes already in
the archive marks the object as written anew (see service.archive.store).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from sqlmodel import Session, select

from service.archive.store import ArchiveStore
from service.models import Artifact, DatasetPartition, DatasetVersion, ModelVersion, Run, RunAttempt
from service.rounds.service import referenced as rounds_referenced

HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SweepReport:
    kept: int
    deleted: int
    freed_bytes: int


def referenced(session: Session) -> set[str]:
    """Every object the database refers to."""
    found: set[str] = set(session.exec(select(Artifact.sha256)).all())
    for resume, plan in session.exec(select(Run.resume_sha256, Run.job_plan)).all():
        found.add(resume or "")
        found.update(HEX.findall(json.dumps(plan or {})))
    for started, shipped in session.exec(select(RunAttempt.resume_sha256, RunAttempt.checkpoint_sha256)).all():
        found.update((started or "", shipped or ""))
    # A volunteer's outputs waiting for validation (once judged, those kept became the run's artifacts).
    for held, states in session.exec(select(RunAttempt.held_outputs, RunAttempt.held_checkpoints)
                                     .where(RunAttempt.verdict == "")).all():
        found.update(HEX.findall(json.dumps([held or {}, states or []])))
    for checkpoint, attribution in session.exec(select(ModelVersion.checkpoint_sha256,
                                                       ModelVersion.attribution_sha256)).all():
        found.update((checkpoint, attribution))
    for files in session.exec(select(DatasetVersion.files)).all():
        found.update(HEX.findall(json.dumps(files or {})))
    found.update(session.exec(select(DatasetPartition.file_sha256)).all())
    found.update(rounds_referenced(session))
    found.discard("")
    return found


def sweep(session: Session, store: ArchiveStore, *, grace_s: float, now: float | None = None) -> SweepReport:
    """Delete the objects nothing refers to that are older than `grace_s` seconds."""
    keep = referenced(session)
    session.rollback()  # no transaction stays open while the store is listed
    now = time.time() if now is None else now
    kept = deleted = freed = 0
    for sha, size, written in list(store.objects()):
        if sha in keep or now - written < grace_s:
            kept += 1
            continue
        store.delete(sha)
        deleted, freed = deleted + 1, freed + size
    return SweepReport(kept, deleted, freed)
