"""Charging attempts in the ledger: whole GPU-seconds as they run, settled exactly when they end.

Each charge advances the attempt's watermark (`charged_until`) by a conditional update and debits the same span
under a key named after it, so a second scheduler, or this one restarted, can never charge a span twice. A lost
or killed attempt keeps only the work up to its last shipped checkpoint: the rest is refunded when it is settled.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session

from service.ledger import service as ledger
from service.models import Run, RunAttempt
from service.timeutil import utcnow


def rate(attempt: RunAttempt) -> float:
    """GPU-seconds charged per second of this attempt."""
    return max(attempt.gpus, 1) * attempt.charge_factor


def charge_running(session: Session, attempt: RunAttempt, run: Run, upto: datetime | None = None,
                   interval_s: float = 0) -> tuple[int, bool]:
    """Debit the whole seconds since the watermark once they make a span of `interval_s` (or use up what the
    award has left); returns (charged, whether the award is now used up)."""
    start = attempt.charged_until or attempt.started_at
    if start is None:
        return 0, False  # the job has not started on a node yet: waiting for a GPU is free
    upto = upto or utcnow()
    elapsed = math.floor((upto - start).total_seconds())
    account = ledger.account_id_for_award(session, run.award_id)
    left = ledger.balance(session, account)
    if elapsed < 1 or (elapsed < interval_s and elapsed * rate(attempt) < left):
        return 0, left <= 0
    until = start + timedelta(seconds=elapsed)
    unchanged = (RunAttempt.charged_until.is_(None) if attempt.charged_until is None
                 else RunAttempt.charged_until == attempt.charged_until)
    moved = session.execute(update(RunAttempt).where(RunAttempt.id == attempt.id, unchanged)
                            .values(charged_until=until).execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        return 0, False  # another scheduler charged this span
    wanted = round(elapsed * rate(attempt))
    charged = ledger.debit(session, account_id=account, seconds=wanted, run_id=run.id, attempt=attempt.number,
                           key=f"debit:run-{run.id}:attempt-{attempt.number}:until-{until.timestamp():.0f}",
                           note=f"{elapsed} s on {attempt.node_name or 'the pool'}")
    session.refresh(attempt)
    return charged, charged < wanted or ledger.balance(session, account) <= 0


def work_ended_at(attempt: RunAttempt, ended_at: datetime) -> datetime:
    """When the attempt's work ended: its job's own end where the runner reported one, so that the time it then
    spent waiting out an outage of the observatory to deliver its outputs is not charged."""
    reported = attempt.reported.get("job_ended_at")
    try:
        job_ended = datetime.fromisoformat(reported) if isinstance(reported, str) else None
    except ValueError:
        job_ended = None
    return min(ended_at, job_ended) if job_ended is not None and job_ended.tzinfo is not None else ended_at


def kept_seconds(attempt: RunAttempt, *, ended_at: datetime, keeps_work: bool) -> int:
    """The GPU-seconds this attempt is charged in the end: up to its end when its work is kept, else up to its
    last shipped checkpoint (nothing when it shipped none)."""
    if attempt.started_at is None:
        return 0
    end = ended_at if keeps_work else (attempt.checkpoint_at or attempt.started_at)
    return round(max(0, math.floor((end - attempt.started_at).total_seconds())) * rate(attempt))


def settle(session: Session, attempt: RunAttempt, run: Run, *, ended_at: datetime, keeps_work: bool) -> int:
    kept = kept_seconds(attempt, ended_at=ended_at, keeps_work=keeps_work)
    why = "work kept" if keeps_work else "work up to the last shipped checkpoint; the rest was lost with the node"
    return ledger.settle(session, account_id=ledger.account_id_for_award(session, run.award_id), run_id=run.id,
                         attempt=attempt.number, kept_seconds=kept, note=f"settled: {why}")
