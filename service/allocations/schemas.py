from __future__ import annotations

from pydantic import BaseModel, Field

from service.models import PriorityClass
from service.types import GpuHours


class AwardCreate(BaseModel):
    gpu_hours: GpuHours = Field(description="GPU-hours granted to the proposal.")
    priority: PriorityClass = Field(PriorityClass.B, description="Scheduling class: A's runs go before B's, B's "
                                                                  "before C's.")
