from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.models import ProposalState


class ProposalCreate(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    abstract: str = Field(min_length=1, max_length=5_000)
    justification: str = Field(min_length=1, max_length=20_000)
    requested_gpu_hours: float = Field(gt=0, le=1_000_000)
    job_plan: dict[str, Any] = Field(description="A typed job plan; see GET /api/job-plans/schema.")
    submit: bool = Field(False, description="Submit at once instead of keeping a draft.")


class ProposalUpdate(BaseModel):
    title: str | None = Field(None, min_length=1, max_length=200)
    abstract: str | None = Field(None, min_length=1, max_length=5_000)
    justification: str | None = Field(None, min_length=1, max_length=20_000)
    requested_gpu_hours: float | None = Field(None, gt=0, le=1_000_000)
    job_plan: dict[str, Any] | None = None


class MemberAdd(BaseModel):
    email: str = Field(max_length=320)


class MemberPublic(BaseModel):
    user_id: int
    name: str
    email: str
    role: str


class AwardPublic(BaseModel):
    id: int
    gpu_hours: float
    used_gpu_hours: float
    awarded_at: datetime
    exclusive_until: datetime


class ProposalPublic(BaseModel):
    id: int
    call_id: int
    pi_id: int
    title: str
    abstract: str
    justification: str
    requested_gpu_hours: float
    job_kind: str
    job_plan: dict[str, Any]
    state: ProposalState
    submitted_at: datetime | None
    created_at: datetime
    members: list[MemberPublic]
    award: AwardPublic | None
