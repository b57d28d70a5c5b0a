from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from service.types import Description, GpuHours, Title


class CallCreate(BaseModel):
    title: Title
    description: Description = ""
    opens_at: datetime
    closes_at: datetime
    capacity_gpu_hours: GpuHours
    exclusive_months: int = Field(default=12, ge=0, le=60)


class CallPublic(BaseModel):
    id: int
    title: str
    description: str
    opens_at: datetime
    closes_at: datetime
    capacity_gpu_hours: float
    exclusive_months: int
    is_open: bool
    awarded_gpu_hours: float
