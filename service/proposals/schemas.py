from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from service.models import ProposalState
from service.types import MAX_GPU_HOURS, Abstract, Email, GpuHours, IdInt, Justification, Keywords, Title, text


class ProposalCreate(BaseModel):
    title: Title
    abstract: Abstract
    justification: Justification
    requested_gpu_hours: GpuHours
    job_plan: dict[str, Any] = Field(default_factory=dict, description="A typed job plan; see GET "
                                     "/api/job-plans/schema. A supplemental proposal has none.")
    parent_award_id: IdInt | None = Field(None, description="In a supplemental call: the award to top up.")
    subject: text(100) = Field("", description="Its subject area, for matching reviewers.")
    keywords: Keywords = []
    submit: bool = Field(False, description="Submit at once instead of keeping a draft.")


class ProposalDraft(BaseModel):
    """A draft keeps whatever is there (blank fields, an unfinished plan); submitting it checks everything."""

    title: text(200) = ""
    abstract: text(5_000) = ""
    justification: text(20_000) = ""
    requested_gpu_hours: Annotated[float, Field(ge=0, le=MAX_GPU_HOURS, allow_inf_nan=False)] = 0.0
    job_plan: dict[str, Any] = Field(default_factory=dict)
    parent_award_id: IdInt | None = None
    subject: text(100) = ""
    keywords: Keywords = []


class ProposalUpdate(BaseModel):
    title: Title | None = None
    abstract: Abstract | None = None
    justification: Justification | None = None
    requested_gpu_hours: GpuHours | None = None
    job_plan: dict[str, Any] | None = None
    subject: text(100) | None = None
    keywords: Keywords | None = None


class InviteCreate(BaseModel):
    email: Email = Field(description="Where the single-use invite link is sent.")


class InvitePublic(BaseModel):
    id: int
    email: str
    created_at: datetime
    expires_at: datetime
    used: bool
    link: str | None = Field(None, description="The link itself: given once, when the invite is made.")


class InviteAccept(BaseModel):
    token: text(100, 1)


class TransferPi(BaseModel):
    user_id: IdInt = Field(description="A co-investigator who becomes the PI.")


class Withdrawal(BaseModel):
    reason: text(1000) = ""


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
    subject: str = ""
    keywords: list[str] = []
    state: ProposalState
    parent_award_id: int | None
    submitted_at: datetime | None
    created_at: datetime
    members: list[MemberPublic]
    award: AwardPublic | None
