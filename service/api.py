"""The JSON API: each domain's router under /api, and errors as {"detail": message}."""

from __future__ import annotations

from fastapi import APIRouter

from jobs.config import job_plan_schema
from service.attempts.api import router as job_router
from service.auth.api import router as auth_router
from service.calls.api import router as calls_router
from service.pool.api import router as pool_router
from service.proposals.api import router as proposals_router
from service.runs.api import router as runs_router

router = APIRouter(prefix="/api")
router.include_router(auth_router)
router.include_router(calls_router)
router.include_router(proposals_router)
router.include_router(runs_router)
router.include_router(pool_router)

# Jobs send checkpoints and outputs here, so these routes take bodies far larger than the rest of the API.
job_api = APIRouter(prefix="/api")
job_api.include_router(job_router)


@router.get("/job-plans/schema", tags=["proposals"])
def job_plans_schema() -> dict:
    """The JSON schema a proposal's job plan must satisfy (public)."""
    return job_plan_schema()
