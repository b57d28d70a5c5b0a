"""A plan's feasibility as reviewers see it: GPU-hours and GPU memory, computed from the plan, never typed in.

The time comes from the plan's size scaled by a measured reference step (`jobs.config.estimated_seconds`), then
calibrated by the observatory's own past runs of that kind: the median ratio of what they were charged to what
their plans estimated. With fewer than `MIN_PAST_RUNS` such runs the reference alone is used, and the basis says so.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, select

from jobs.config import JobPlanError, estimated_seconds, estimated_vram_gb, parse_job_plan
from service.ledger.service import run_charged
from service.models import Run, RunState

MIN_PAST_RUNS = 3
PAST_RUNS = 50


class Feasibility(BaseModel):
    gpu_hours: float | None
    vram_gb: float | None
    basis: str
    past_runs: int
    fits_request: bool | None  # whether the estimate fits within the GPU-hours asked for


def _calibration(session: Session, kind: str) -> list[float]:
    ratios = []
    for run in session.exec(select(Run).where(Run.job_kind == kind, Run.state == RunState.succeeded)
                            .order_by(Run.id.desc()).limit(PAST_RUNS)):
        try:
            estimate = estimated_seconds(parse_job_plan(run.job_plan))
        except JobPlanError:
            continue
        charged = run_charged(session, run.id)
        if estimate > 0 and charged > 0:
            ratios.append(charged / estimate)
    return ratios


def feasibility(session: Session, plan: dict[str, Any], requested_gpu_hours: float,
                calibrations: dict[str, list[float]] | None = None) -> Feasibility:
    """`calibrations`, when given, keeps each kind's past-run ratios across calls (a page showing many plans
    reads the past runs once)."""
    try:
        parsed = parse_job_plan(plan)
    except JobPlanError:
        return Feasibility(gpu_hours=None, vram_gb=None, basis="no job plan to estimate", past_runs=0,
                           fits_request=None)
    seconds = estimated_seconds(parsed)
    calibrations = {} if calibrations is None else calibrations
    if parsed.kind not in calibrations:
        calibrations[parsed.kind] = _calibration(session, parsed.kind)
    ratios = calibrations[parsed.kind]
    if len(ratios) >= MIN_PAST_RUNS:
        factor = median(ratios)
        seconds *= factor
        basis = (f"the plan's size, calibrated by {len(ratios)} past {parsed.kind} runs (they were charged "
                 f"{factor:.2f}× their estimates, median)")
    else:
        basis = (f"the plan's size and a reference step measured on one CPU core (fewer than {MIN_PAST_RUNS} past "
                 f"{parsed.kind} runs to calibrate by)")
    hours = seconds / 3600
    return Feasibility(gpu_hours=hours, vram_gb=estimated_vram_gb(parsed), basis=basis,
                       past_runs=len(ratios), fits_request=hours <= requested_gpu_hours)
