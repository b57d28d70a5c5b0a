from __future__ import annotations

from pydantic import BaseModel, Field

from service.models import PriorityClass
from service.types import GpuHours, Reason


class AwardCreate(BaseModel):
    gpu_hours: GpuHours = Field(description="GPU-hours granted to the proposal.")
    priority: PriorityClass = Field(PriorityClass.B, description="Scheduling class: A's runs go before B's, B's "
                                                                  "before C's.")
    reason: Reason = Field("", description="Why, when the decision goes against the panel's ranking.")


class Decline(BaseModel):
    reason: Reason = Field("", description="Why; needed when the proposal is above the triage line.")
