"""The run and attempt state machines. Only `transition` and `end_attempt` change a state; each change is a
conditional UPDATE whose row count is checked (0: another writer got there first, a Conflict, never a silent
overwrite) and writes a RunEvent row, the audit trail.

A run:

    queued    -> running     the scheduler holding its claim submitted an attempt (refused if a cancel came first)
    queued    -> cancelled   cancelled before it started (unclaimed, or found with a cancel request at dispatch)
    queued    -> failed      it cannot run (bad plan, missing input, no GPU-hours left, retries used up)
    running   -> succeeded   the attempt ended well and every required output is in the archive
    running   -> failed      the job failed on its own, or its outputs were refused, or its end could not be recorded
    running   -> cancelled   stopped on request, or because the award's GPU-hours ran out (its checkpoint is kept)
    running   -> queued      its node vanished, its job was killed, or its machine left the pool or was revoked
                             (the job was asked to stop: `STOP_MOVE`): it resumes from its last shipped checkpoint

An attempt (one try on one node):

    starting  -> running     Ray accepted the job
    starting  -> failed      it was never submitted (the run was cancelled, or Ray refused it)
    running   -> succeeded | failed | stopped | lost    (lost: its node vanished, or the job was killed)

succeeded, failed, cancelled (runs) and succeeded, failed, stopped, lost (attempts) are final.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session

from service.errors import Conflict
from service.models import AttemptState, Run, RunAttempt, RunEvent, RunState
from service.timeutil import utcnow

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.queued: frozenset({RunState.running, RunState.cancelled, RunState.failed}),
    RunState.running: frozenset({RunState.succeeded, RunState.failed, RunState.cancelled, RunState.queued}),
    RunState.succeeded: frozenset(),
    RunState.failed: frozenset(),
    RunState.cancelled: frozenset(),
}
FINAL = frozenset({RunState.succeeded, RunState.failed, RunState.cancelled})

ATTEMPT_TRANSITIONS: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.starting: frozenset({AttemptState.running, AttemptState.failed}),
    AttemptState.running: frozenset({AttemptState.succeeded, AttemptState.failed, AttemptState.stopped,
                                     AttemptState.lost}),
    **{state: frozenset() for state in (AttemptState.succeeded, AttemptState.failed, AttemptState.stopped,
                                        AttemptState.lost)},
}
LIVE_ATTEMPT = frozenset({AttemptState.starting, AttemptState.running})
# Why the scheduler asks a running job to stop (Run.stop_reason), other than a cancel: its award is used up (the
# run ends, its checkpoint kept), or its machine is leaving (the run checkpoints and resumes on another).
STOP_BUDGET = "budget"
STOP_MOVE = "move"


def can_move(current: RunState, target: RunState) -> bool:
    return target in TRANSITIONS[RunState(current)]


def transition(session: Session, run: Run, target: RunState, reason: str, *, actor: str = "scheduler",
               claim_token: str | None = None, extra: dict[str, Any] | None = None) -> Run:
    """Move the run from the state it was read in to `target`, or raise Conflict if it has moved meanwhile.

    `claim_token` also requires the caller's claim to be the one the run holds. Entering `running` also requires
    that no cancel has been requested. Returns the run as the database now has it.
    """
    current = RunState(run.state)
    if not can_move(current, target):
        raise Conflict(f"run {run.id} cannot go from {current} to {target}")
    session.flush()
    now = utcnow()
    values: dict[str, Any] = {"state": target, "message": reason[:2000], "claim_token": None,
                              "claim_expires_at": None, **(extra or {})}
    if target == RunState.running:
        values["started_at"] = func.coalesce(Run.started_at, now)
    if target in FINAL:
        values["finished_at"] = now
    statement = update(Run).where(Run.id == run.id, Run.state == current)
    if claim_token is not None:
        statement = statement.where(Run.claim_token == claim_token)
    if target == RunState.running:
        statement = statement.where(Run.cancel_requested.is_(False))
    result = session.execute(statement.values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise Conflict(f"run {run.id} changed while moving it from {current} to {target}; nothing was done")
    session.add(RunEvent(run_id=run.id, attempt=run.attempt or None, from_state=str(current), to_state=str(target),
                         actor=actor[:320], reason=reason[:2000], at=now))
    session.flush()
    session.refresh(run)
    if target == RunState.succeeded:
        from service.archive import catalog  # the catalogue reads proposals and artifacts, which import runs

        catalog.add_run(session, run)
    return run


def move_attempt(session: Session, attempt: RunAttempt, target: AttemptState, message: str = "", *,
                 actor: str = "scheduler", extra: dict[str, Any] | None = None) -> RunAttempt:
    """The attempt's conditional transition, with its event; Conflict if it has moved meanwhile."""
    current = AttemptState(attempt.state)
    if target not in ATTEMPT_TRANSITIONS[current]:
        raise Conflict(f"attempt {attempt.number} of run {attempt.run_id} cannot go from {current} to {target}")
    session.flush()
    now = utcnow()
    values: dict[str, Any] = {"state": target, **(extra or {})}
    if message:
        values["message"] = message[:2000]
    if target not in LIVE_ATTEMPT:
        values.setdefault("ended_at", func.coalesce(RunAttempt.ended_at, now))
    result = session.execute(update(RunAttempt).where(RunAttempt.id == attempt.id, RunAttempt.state == current)
                             .values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise Conflict(f"attempt {attempt.number} of run {attempt.run_id} changed meanwhile; nothing was done")
    session.add(RunEvent(run_id=attempt.run_id, attempt=attempt.number, subject="attempt", from_state=str(current),
                         to_state=str(target), actor=actor[:320], reason=message[:2000], at=now))
    session.flush()
    session.refresh(attempt)
    return attempt
