from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.models import ProposalState
from service.types import Abstract, Email, GpuHours, Justification, Title


class ProposalCreate(BaseModel):
    title: Title
    abstract: Abstract
    justification: Justification
    requested_gpu_hours: GpuHours
    job_plan: dict[str, Any] = Field(description="A typed job plan; see GET /api/job-plans/schema.")
    submit: bool = Field(False, description="Submit at once instead of keeping a draft.")


class ProposalUpdate(BaseModel):
    title: Title | None = None
    abstract: Abstract | None = None
    justification: Justification | None = None
    requested_gpu_hours: GpuHours | None = None
    job_plan: dict[str, Any] | None = None


class MemberAdd(BaseModel):
    email: Email


class MemberPublic(BaseModel):
    user_id: int
    name: str
    email: str
    role: str


class AwardPublic(BaseModel):
    id: int
    gpu_hours: float
    priority: str
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
