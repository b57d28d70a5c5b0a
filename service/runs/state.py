"""The run state machine. Only `move` changes a run's state; every allowed transition is listed here.

    queued    -> running     the scheduler submitted it to Ray
    queued    -> cancelled   cancelled before it started
    queued    -> failed      it could not be submitted (bad plan, missing checkpoint)
    running   -> succeeded   the job exited 0 and its outputs are in the archive
    running   -> failed      the job exited non-zero, was lost, or its outputs could not be archived
    running   -> cancelled   stopped on request, or because the award's GPU-hours ran out
    running   -> queued      its node vanished before it finished; it resumes from its last checkpoint

succeeded, failed and cancelled are final.
"""

from __future__ import annotations

from service.errors import Conflict
from service.models import Run, RunState
from service.timeutil import utcnow

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.queued: frozenset({RunState.running, RunState.cancelled, RunState.failed}),
    RunState.running: frozenset({RunState.succeeded, RunState.failed, RunState.cancelled, RunState.queued}),
    RunState.succeeded: frozenset(),
    RunState.failed: frozenset(),
    RunState.cancelled: frozenset(),
}
FINAL = frozenset({RunState.succeeded, RunState.failed, RunState.cancelled})


def can_move(current: RunState, target: RunState) -> bool:
    return target in TRANSITIONS[RunState(current)]


def move(run: Run, target: RunState, message: str | None = None) -> None:
    """Change the run's state, or raise Conflict naming the refused transition."""
    if not can_move(run.state, target):
        raise Conflict(f"run {run.id} cannot go from {run.state} to {target}")
    now = utcnow()
    run.state = target
    # A claim only guards the step out of `queued`; whatever the move, it is spent.
    run.claim_token = None
    run.claim_expires_at = None
    if target == RunState.running:
        run.started_at = run.started_at or now
        run.charged_until = now
    if target in FINAL:
        run.finished_at = now
    if message is not None:
        run.message = message[:2000]
