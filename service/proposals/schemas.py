from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from service.models import ProposalState
from service.types import MAX_GPU_HOURS, Abstract, Email, GpuHours, Justification, Title, text


class ProposalCreate(BaseModel):
    title: Title
    abstract: Abstract
    justification: Justification
    requested_gpu_hours: GpuHours
    job_plan: dict[str, Any] = Field(description="A typed job plan; see GET /api/job-plans/schema.")
    submit: bool = Field(False, description="Submit at once instead of keeping a draft.")


class ProposalDraft(BaseModel):
    """A draft keeps whatever is there (blank fields, an unfinished plan); submitting it checks everything."""

    title: text(200) = ""
    abstract: text(5_000) = ""
    justification: text(20_000) = ""
    requested_gpu_hours: Annotated[float, Field(ge=0, le=MAX_GPU_HOURS, allow_inf_nan=False)] = 0.0
    job_plan: dict[str, Any] = Field(default_factory=dict)


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
