"""Which queued runs to dispatch now: pure, no database and no Ray, so it is easy to reason about and test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedRun:
    run_id: int
    award_id: int
    gpus: int


@dataclass(frozen=True)
class Decision:
    dispatch: list[int]
    refuse: dict[int, str]  # run id -> why it cannot run at all


def decide(queue: list[QueuedRun], remaining_gpu_seconds: dict[int, float], free_gpus: int | None) -> Decision:
    """Oldest first; a run whose award has no GPU-time left is refused; at most `free_gpus` GPUs handed out
    (None: the pool's size is unknown, so Ray's own queue holds what does not fit)."""
    dispatch: list[int] = []
    refuse: dict[int, str] = {}
    budget = free_gpus
    for run in sorted(queue, key=lambda r: r.run_id):
        if remaining_gpu_seconds.get(run.award_id, 0.0) <= 0:
            refuse[run.run_id] = "the award has no GPU-hours left"
            continue
        if budget is not None:
            if run.gpus > budget:
                continue
            budget -= run.gpus
        dispatch.append(run.run_id)
    return Decision(dispatch, refuse)
