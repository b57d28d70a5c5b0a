"""Training images taken out of the shared model: deleted from Commons, relicensed, or left out at their author's
request. A family trained on one is rebuilt without it, retraining only the expert whose cluster held it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class WithdrawalReason(StrEnum):
    deleted = "deleted"  # the file was deleted from Wikimedia Commons
    license_changed = "license_changed"  # its license is no longer one the observatory takes
    author_request = "author_request"  # its author asked to be left out
    other = "other"


class Withdrawal(SQLModel, table=True):
    __tablename__ = "withdrawals"

    id: int | None = Field(default=None, primary_key=True)
    image_sha256: str = Field(max_length=64, unique=True)
    page_id: int | None = None  # its Commons page, when it came from Commons
    title: str = Field(default="", max_length=300)
    reason: WithdrawalReason = Field(sa_type=enum_column(WithdrawalReason, 20))
    note: str = Field(default="", max_length=2_000)
    recorded_by: int | None = Field(default=None, foreign_key="users.id")  # None: the operator's command line
    created_at: datetime = Field(default_factory=utcnow)
