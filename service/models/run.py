"""Runs of awarded work on the pool, and the artifacts they leave in the archive."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class RunState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    award_id: int = Field(foreign_key="awards.id", index=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    job_kind: str = Field(max_length=40)
    job_plan: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: RunState = Field(default=RunState.queued, index=True, sa_type=enum_column(RunState, 20))
    progress: float = 0.0
    progress_detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    message: str = Field(default="", max_length=2_000)
    gpus: int = 1
    gpu_seconds: float = 0.0
    # Random per run: with the attempt it names the Ray job, so that a database reset against a long-lived
    # cluster can never mistake an old job for a new run with the same id.
    key: str = Field(default_factory=lambda: secrets.token_hex(6), max_length=12)
    attempt: int = 0
    submission_id: str | None = Field(default=None, max_length=100)
    claim_token: str | None = Field(default=None, max_length=64)
    claim_expires_at: datetime | None = None
    cancel_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    charged_until: datetime | None = None
    finished_at: datetime | None = None


class Artifact(SQLModel, table=True):
    """One output file of a run, stored content-addressed under archive/objects/."""

    __tablename__ = "artifacts"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=40)
    sha256: str = Field(max_length=64, index=True)
    size: int
    media_type: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
