from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class CallCreate(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    opens_at: datetime
    closes_at: datetime
    capacity_gpu_hours: float = Field(gt=0, le=1_000_000)
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
