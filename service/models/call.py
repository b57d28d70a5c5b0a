"""Cycles and their calls for proposals."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow

DIRECTOR_RESERVE_LIMIT = 0.10  # the Director's reserve is at most this share of a cycle's capacity


class CallKind(StrEnum):
    regular = "regular"  # a deadline, then peer review by a panel
    director = "director"  # Director's Discretionary time: any time, decided by the director from the reserve
    supplemental = "supplemental"  # small top-ups to an active award, decided by the director


class Cycle(SQLModel, table=True):
    """A round of allocation: its capacity in GPU-hours, of which the Director's reserve is set apart."""

    __tablename__ = "cycles"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    capacity_gpu_hours: float
    director_reserve_gpu_hours: float = 0.0
    created_by: int = Field(foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)


class Call(SQLModel, table=True):
    __tablename__ = "calls"

    id: int | None = Field(default=None, primary_key=True)
    cycle_id: int = Field(foreign_key="cycles.id", index=True)
    kind: CallKind = Field(default=CallKind.regular, sa_type=enum_column(CallKind, 20))
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=10_000)
    opens_at: datetime
    closes_at: datetime
    capacity_gpu_hours: float
    exclusive_months: int = 12
    # The share of the capacity reserved for contributors: awarded to their proposals in proportion to the credit
    # their volunteers' machines earned (service.volunteers.donors).
    donor_share: float = 0.0
    # What a proposal of this call may keep in the archive, in GB (None: no limit).
    storage_quota_gb: float | None = None
    # Phase II: the largest share of an award one further run may take before it needs the committee's approval.
    team_run_share: float = 0.5
    # Review (regular calls): reviewers per proposal, the most one reviewer is given, whether the panel works
    # dual-anonymous, and the share of the ranking below the triage line.
    dual_anonymous: bool = True
    reviewers_per_proposal: int = 3
    reviewer_cap: int = 8
    triage_fraction: float = 0.3
    review_started_at: datetime | None = None
    decisions_released_at: datetime | None = None
    created_by: int = Field(foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)
