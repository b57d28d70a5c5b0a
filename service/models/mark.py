"""People's judgement of an analysis: whether a shown pair (a generated sample and its nearest training image) is
a copy. One mark per person and pair; the automatic verdict is compared with them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class Verdict(StrEnum):
    copy = "copy"
    not_copy = "not_copy"


class PairMark(SQLModel, table=True):
    __tablename__ = "pair_marks"
    __table_args__ = (UniqueConstraint("run_id", "seed", "user_id", name="uq_pair_mark_per_person"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    seed: int  # the sample's seed: it names the pair within the run's results
    training_sha256: str = Field(max_length=64)  # the training image it was paired with
    ratio: float | None = None  # the pair's distance ratio, as the search measured it (what a threshold cuts)
    verdict: Verdict = Field(sa_type=enum_column(Verdict, 10))
    user_id: int = Field(foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
