"""Runs: created from an award, claimed and driven by the scheduler, watched and cancelled by members."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, select

from service.db import lock
from service.errors import Forbidden, NotFound
from service.models import Award, Proposal, Role, Run, RunState, User
from service.proposals.service import is_member
from service.runs.state import FINAL, move
from service.timeutil import utcnow


def create_run(session: Session, *, award: Award, proposal: Proposal, gpus: int = 1) -> Run:
    run = Run(award_id=award.id, proposal_id=proposal.id, job_kind=proposal.job_kind,
              job_plan=dict(proposal.job_plan), gpus=gpus)
    session.add(run)
    session.flush()
    return run


def get_visible(session: Session, *, actor: User, run_id: int) -> Run:
    """A run its proposal's members and admins may watch; 404 to anyone else."""
    run = session.get(Run, run_id)
    if run is None or not (actor.role == Role.admin or is_member(session, actor, run.proposal_id)):
        raise NotFound(f"no run {run_id}")
    return run


def list_for_proposal(session: Session, proposal_id: int) -> list[Run]:
    return list(session.exec(select(Run).where(Run.proposal_id == proposal_id).order_by(Run.id)))


def request_cancel(session: Session, *, actor: User, run_id: int) -> Run:
    """A queued run is cancelled at once; a running one is stopped by the scheduler's next tick.

    The run's row is locked first, so a scheduler claiming it at the same moment either sees it cancelled or
    holds the claim that makes this a cancel request.
    """
    get_visible(session, actor=actor, run_id=run_id)
    run = lock(session, Run, run_id)
    proposal = session.get(Proposal, run.proposal_id)
    if actor.role != Role.admin and proposal.pi_id != actor.id:
        raise Forbidden("only the PI or an admin cancels a run")
    if run.state in FINAL:
        return run
    if run.state == RunState.queued and run.claim_token is None:
        move(run, RunState.cancelled, f"cancelled by {actor.email}")
    else:
        run.cancel_requested = True
        run.message = f"cancel requested by {actor.email}"
    session.add(run)
    session.flush()
    return run


# ---- scheduler side ----------------------------------------------------------------------------------------


def claim_queued(session: Session, *, limit: int, ttl_s: int, now: datetime | None = None) -> tuple[str, list[Run]]:
    """Claim up to `limit` queued runs for this scheduler and commit the claim.

    On PostgreSQL the candidates are locked with FOR UPDATE SKIP LOCKED, so racing schedulers take disjoint
    rows; the conditional UPDATE also makes the claim safe on SQLite, whose writes are serialised.
    """
    now = now or utcnow()
    token = secrets.token_hex(16)
    claimable = (Run.state == RunState.queued) & or_(Run.claim_token.is_(None), Run.claim_expires_at < now)
    candidates = session.exec(
        select(Run.id).where(claimable).order_by(Run.id).limit(limit).with_for_update(skip_locked=True)
    ).all()
    if candidates:
        session.exec(
            update(Run).where(Run.id.in_(candidates), claimable)
            .values(claim_token=token, claim_expires_at=now + timedelta(seconds=ttl_s))
        )
    session.commit()
    runs = list(session.exec(select(Run).where(Run.claim_token == token).order_by(Run.id)))
    return token, runs


def active_runs(session: Session) -> list[Run]:
    return list(session.exec(select(Run).where(Run.state == RunState.running).order_by(Run.id)))


def record_progress(run: Run, detail: dict[str, Any]) -> None:
    run.progress_detail = detail
    fraction = detail.get("fraction")
    if isinstance(fraction, int | float):
        run.progress = max(0.0, min(1.0, float(fraction)))


def charge(run: Run, now: datetime | None = None) -> float:
    """Add the GPU-seconds since the last charge; returns the seconds added. Idempotent per instant."""
    now = now or utcnow()
    if run.charged_until is None or now <= run.charged_until:
        return 0.0
    seconds = (now - run.charged_until).total_seconds() * run.gpus
    run.gpu_seconds += seconds
    run.charged_until = now
    return seconds
