"""What a run is doing, in the one word every page shows: "waiting" while it is queued or placed on a node that has
not started it yet, else its state (running, succeeded, failed, cancelled)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, select

from service.models import Run, RunAttempt, RunState

WAITING = "waiting"


def shown_states(session: Session, runs: Iterable[Run]) -> dict[int, str]:
    """Each run's word, in one query for all of them."""
    runs = list(runs)
    placed = [r.id for r in runs if r.state == RunState.running]
    started: set[int] = set()
    if placed:
        started = set(session.exec(select(RunAttempt.run_id).join(Run, Run.id == RunAttempt.run_id).where(
            RunAttempt.run_id.in_(placed), RunAttempt.number == Run.attempt,
            RunAttempt.started_at.is_not(None))).all())
    return {r.id: word(r.state, r.id in started) for r in runs}


def word(state: RunState | str, started: bool) -> str:
    """The word for a run in `state` whose latest attempt has (or has not) started on its node."""
    return WAITING if state == RunState.queued or (state == RunState.running and not started) else str(state)


def shown_state(session: Session, run: Run) -> str:
    return shown_states(session, [run])[run.id]
