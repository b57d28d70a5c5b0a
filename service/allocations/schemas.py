from __future__ import annotations

from pydantic import BaseModel, Field

from service.types import GpuHours


class AwardCreate(BaseModel):
    gpu_hours: GpuHours = Field(description="GPU-hours granted to the proposal.")
