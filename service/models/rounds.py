"""Rounds of a run that several nodes train together (DiLoCo): each round's global weights, what each worker sent,
and what the round made of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.timeutil import utcnow


class TrainingRound(SQLModel, table=True):
    """One round: open while the workers train from `base_sha256` (the global weights at `step`); closed when every
    live worker has sent its contribution, or its timeout after the first one passed. Closing it makes the next
    global weights (`result_sha256`) and the outer optimizer's momentum (`momentum_sha256`)."""

    __tablename__ = "training_rounds"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    number: int
    state: str = Field(default="open", max_length=10)  # open | closed
    step: int = 0  # the global step the round starts at
    base_sha256: str = Field(max_length=64)
    base_momentum_sha256: str | None = Field(default=None, max_length=64)  # the outer momentum entering the round
    opened_at: datetime = Field(default_factory=utcnow)
    first_at: datetime | None = None  # the first contribution: the timeout counts from here
    closed_at: datetime | None = None
    result_sha256: str | None = Field(default=None, max_length=64)
    momentum_sha256: str | None = Field(default=None, max_length=64)  # the outer state: momentum (and master)
    # The int8 update that turns this round's base into its result, when the global weights travel down that way.
    update_sha256: str | None = Field(default=None, max_length=64)
    steps: int = 0  # the inner steps it trained
    samples: int = 0
    bytes_in: int = Field(default=0, sa_type=BigInteger)  # the contributions taken
    bytes_out: int = Field(default=0, sa_type=BigInteger)  # the next global weights, once to each contributor
    loss: float | None = None  # the contributors' mean training loss, weighted by samples
    live_workers: int = 0  # the run's live attempts when it closed
    contributors: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    late: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    finisher_attempt_id: int | None = None  # on the last round: the attempt that makes the run's outputs


class RoundContribution(SQLModel, table=True):
    """What one worker (attempt) sent for one round."""

    __tablename__ = "round_contributions"
    __table_args__ = (UniqueConstraint("run_id", "round", "attempt_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    round: int
    attempt_id: int = Field(foreign_key="run_attempts.id", index=True)
    attempt: int  # the attempt's number
    worker: int
    sha256: str = Field(max_length=64)
    size: int = Field(sa_type=BigInteger)
    samples: int
    steps: int
    loss: float | None = None
    received_at: datetime = Field(default_factory=utcnow)
