"""Calls for proposals."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from service.timeutil import utcnow


class Call(SQLModel, table=True):
    __tablename__ = "calls"

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=10_000)
    opens_at: datetime
    closes_at: datetime
    capacity_gpu_hours: float
    exclusive_months: int = 12
    created_by: int = Field(foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)
