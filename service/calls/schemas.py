from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from service.models import CallKind
from service.types import Description, GpuHours, IdInt, Title


class CycleCreate(BaseModel):
    name: Title
    capacity_gpu_hours: GpuHours
    director_reserve_gpu_hours: float = Field(0.0, ge=0, allow_inf_nan=False,
                                              description="Set apart for Director's Discretionary time: at most "
                                                          "10% of the capacity.")


class CyclePublic(BaseModel):
    id: int
    name: str
    capacity_gpu_hours: float
    director_reserve_gpu_hours: float
    director_awarded_gpu_hours: float
    calls_capacity_gpu_hours: float


class CallCreate(BaseModel):
    title: Title
    description: Description = ""
    kind: CallKind = CallKind.regular
    cycle_id: IdInt | None = Field(None, description="The cycle it belongs to; without one, a regular call gets a "
                                                      "cycle of its own with its capacity.")
    opens_at: datetime
    closes_at: datetime
    capacity_gpu_hours: GpuHours
    exclusive_months: int = Field(default=12, ge=0, le=60)
    dual_anonymous: bool = Field(True, description="Reviewers never learn who wrote a proposal.")
    reviewers_per_proposal: int = Field(3, ge=1, le=10)
    reviewer_cap: int = Field(8, ge=1, le=200, description="The most proposals one reviewer is given.")
    triage_fraction: float = Field(0.3, ge=0, le=0.9, description="The share of the ranking below the triage line.")
    donor_share: float = Field(0.0, ge=0, le=0.5, allow_inf_nan=False,
                               description="The share of the capacity reserved for contributors' proposals, awarded "
                                           "in proportion to their volunteers' credit (at most half).")
    storage_quota_gb: float | None = Field(None, gt=0, le=1_000_000, allow_inf_nan=False,
                                           description="What one proposal may keep in the archive, in GB (none: "
                                                       "no limit). A run that would take it past this waits.")


class CallPublic(BaseModel):
    id: int
    cycle_id: int
    kind: CallKind
    title: str
    description: str
    opens_at: datetime
    closes_at: datetime
    capacity_gpu_hours: float
    exclusive_months: int
    dual_anonymous: bool
    reviewers_per_proposal: int
    reviewer_cap: int
    triage_fraction: float
    donor_share: float = 0.0
    storage_quota_gb: float | None = None
    review_started_at: datetime | None
    decisions_released_at: datetime | None
    is_open: bool
    awarded_gpu_hours: float
