"""The archive's catalogue: one row per public data product (a run's outputs, a model version, a dataset version),
with the fields people search and filter by, so that a search over 100,000 products reads one indexed table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from service.timeutil import utcnow


class ArchiveProduct(SQLModel, table=True):
    __tablename__ = "archive_products"
    __table_args__ = (Index("ix_archive_products_made_at_id", "made_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    ref: str = Field(max_length=220, unique=True)  # obs:run/12, obs:model/NAME@N, obs:dataset/NAME@N
    kind: str = Field(max_length=10, index=True)  # run, model or dataset
    job_kind: str = Field(default="", max_length=40, index=True)  # a run's kind (a version: its run's kind)
    title: str = Field(max_length=400)
    proposal_id: int | None = Field(default=None, foreign_key="proposals.id", index=True)
    call_id: int | None = Field(default=None, foreign_key="calls.id", index=True)
    cycle_id: int | None = Field(default=None, foreign_key="cycles.id", index=True)
    model: str = Field(default="", max_length=120, index=True)  # the model version it is, started from or analysed
    dataset: str = Field(default="", max_length=120, index=True)  # the dataset version it is or was trained on
    license: str = Field(default="", max_length=20, index=True)  # the most demanding license family of its data
    text: str = Field(default="", max_length=2_000)  # lower-case words a search matches
    url: str = Field(max_length=300)  # its landing page
    run_id: int | None = Field(default=None, foreign_key="runs.id")  # the run whose files are its files
    thumbnail: bool = False  # its landing page has a picture to show
    public_from: datetime | None = None  # when its files become public (None: not at all, e.g. withdrawn)
    made_at: datetime = Field(default_factory=utcnow)
