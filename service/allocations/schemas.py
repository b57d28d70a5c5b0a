from __future__ import annotations

from pydantic import BaseModel, Field


class AwardCreate(BaseModel):
    gpu_hours: float = Field(gt=0, le=1_000_000, description="GPU-hours granted to the proposal.")
