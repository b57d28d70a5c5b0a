"""The JSON API: each domain's router under /api, and errors as {"detail": message}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from jobs.config import REFERENCE_SECONDS_PER_STEP, JobPlanError, estimated_seconds, job_plan_schema, parse_job_plan
from service.allocations.phase2_api import router as awards_router
from service.analyses.api import router as analyses_router
from service.archive.api import router as archive_router
from service.attempts.api import router as job_router
from service.auth.api import router as auth_router
from service.calls.api import router as calls_router
from service.datasets.api import router as datasets_router
from service.datasets.withdrawals_api import router as withdrawals_router
from service.errors import Invalid
from service.modelcards.api import router as models_router
from service.pool.api import router as pool_router
from service.proposals.api import router as proposals_router
from service.review.api import router as review_router
from service.review.expertise_api import router as expertise_router
from service.rounds.api import router as rounds_router
from service.runs.api import router as runs_router
from service.volunteers.api import router as volunteers_router
from service.volunteers.api import standings_router

router = APIRouter(prefix="/api")
router.include_router(auth_router)
router.include_router(calls_router)
router.include_router(proposals_router)
router.include_router(runs_router)
router.include_router(pool_router)
router.include_router(volunteers_router)
router.include_router(standings_router)
router.include_router(review_router)
router.include_router(expertise_router)
router.include_router(datasets_router)
router.include_router(models_router)
router.include_router(withdrawals_router)
router.include_router(analyses_router)
router.include_router(archive_router)
router.include_router(awards_router)

# Jobs send checkpoints and outputs here, so these routes take bodies far larger than the rest of the API.
job_api = APIRouter(prefix="/api")
job_api.include_router(job_router)
job_api.include_router(rounds_router)


class Estimate(BaseModel):
    seconds: float
    gpu_hours: float
    basis: str


@router.post("/job-plans/estimate", response_model=Estimate, tags=["proposals"])
def job_plan_estimate(plan: dict[str, Any]) -> Estimate:
    """How long a job plan takes, and so the GPU-hours to ask for, estimated from a measured step (public)."""
    try:
        seconds = estimated_seconds(parse_job_plan(plan))
    except JobPlanError as exc:
        raise Invalid(str(exc)) from None
    return Estimate(seconds=round(seconds, 1), gpu_hours=round(seconds / 3600, 3), basis=ESTIMATE_BASIS)


ESTIMATE_BASIS = (f"{REFERENCE_SECONDS_PER_STEP} s a step measured for the default train plan on one CPU core, "
                  "scaled by the plan's size; a GPU is faster")


@router.get("/job-plans/schema", tags=["proposals"])
def job_plans_schema() -> dict:
    """The JSON schema a proposal's job plan must satisfy (public)."""
    return job_plan_schema()
