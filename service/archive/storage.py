"""What a proposal keeps in the archive, counted, and its call's storage quota: a run that would take the proposal
past its quota (by the upper estimate of its declared outputs) is not placed, and says why, rather than failing
after hours when its outputs arrive."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from jobs.config import JobPlanError, estimated_output_bytes, parse_job_plan
from service.errors import Conflict
from service.models import Artifact, Call, Proposal, Run, RunAttempt

GB = 10**9


def _objects(session: Session, run_ids: list[int]) -> dict[str, int]:
    """Every archive object the runs keep (outputs, shipped states, a volunteer's held states), by sha256."""
    if not run_ids:
        return {}
    found: dict[str, int] = dict(session.exec(select(Artifact.sha256, Artifact.size)
                                              .where(Artifact.run_id.in_(run_ids))).all())
    for sha, size, held in session.exec(select(RunAttempt.checkpoint_sha256, RunAttempt.checkpoint_size,
                                               RunAttempt.held_checkpoints).where(RunAttempt.run_id.in_(run_ids))):
        if sha:
            found.setdefault(sha, int(size or 0))
        for _, held_sha, held_size in held or []:
            found.setdefault(str(held_sha), int(held_size or 0))
    return found


def proposal_run_ids(session: Session, proposal_id: int) -> list[int]:
    return list(session.exec(select(Run.id).where(Run.proposal_id == proposal_id)).all())


def used_bytes(session: Session, proposal_id: int) -> int:
    """What the proposal's runs keep in the archive (each object once)."""
    return sum(_objects(session, proposal_run_ids(session, proposal_id)).values())


def run_bytes(session: Session, run_id: int) -> int:
    return sum(_objects(session, [run_id]).values())


def quota_bytes(session: Session, proposal: Proposal) -> int | None:
    call = session.get(Call, proposal.call_id)
    return None if call is None or call.storage_quota_gb is None else int(call.storage_quota_gb * GB)


@dataclass(frozen=True)
class Storage:
    used: int
    quota: int | None

    @property
    def share(self) -> float | None:
        return None if not self.quota else self.used / self.quota


def of_proposal(session: Session, proposal: Proposal) -> Storage:
    return Storage(used_bytes(session, proposal.id), quota_bytes(session, proposal))


def size_words(count: float) -> str:
    for unit, scale in (("GB", GB), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{int(count)} bytes"


def expected_bytes(run: Run) -> int:
    """The upper estimate of what the run will keep, from its plan's declared outputs."""
    try:
        return estimated_output_bytes(parse_job_plan({**run.job_plan, "kind": run.job_kind}))
    except (JobPlanError, ValueError, TypeError):
        return 0


def over_quota(session: Session, runs: list[Run]) -> dict[int, str]:
    """The queued runs that would take their proposal past its storage quota: run id -> why it waits. A run that
    has already sent outputs counts what it sent, not its estimate again."""
    held: dict[int, str] = {}
    by_proposal: dict[int, list[Run]] = {}
    for run in runs:
        by_proposal.setdefault(run.proposal_id, []).append(run)
    for proposal_id, waiting in by_proposal.items():
        proposal = session.get(Proposal, proposal_id)
        quota = quota_bytes(session, proposal) if proposal else None
        if quota is None:
            continue
        used = used_bytes(session, proposal_id)
        for run in waiting:
            coming = max(expected_bytes(run) - run_bytes(session, run.id), 0)
            if used + coming > quota:
                held[run.id] = (f"waiting: {_past(used, quota, coming)}; it is placed once an admin raises the "
                                "quota or space is freed")
    return held


def _past(used: int, quota: int, coming: int) -> str:
    return (f"the proposal's archive storage would pass its quota ({size_words(used)} used of {size_words(quota)}; "
            f"this run's outputs may take up to {size_words(coming)})")


def check_room(session: Session, run: Run) -> None:
    """Refuse a new run (not yet added) whose outputs would take its proposal past its storage quota."""
    proposal = session.get(Proposal, run.proposal_id)
    quota = quota_bytes(session, proposal) if proposal else None
    if quota is None:
        return
    used, coming = used_bytes(session, run.proposal_id), expected_bytes(run)
    if used + coming > quota:
        raise Conflict(f"refused: {_past(used, quota, coming)}; ask an admin to raise the call's quota")
