"""The pool as the scheduler last saw it: one row per Ray node, alive or gone."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class PoolNode(SQLModel, table=True):
    __tablename__ = "pool_nodes"

    node_id: str = Field(primary_key=True, max_length=64)
    address: str = Field(max_length=255)
    is_head: bool = False
    alive: bool = True
    resources: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    first_seen_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)


class PoolClaim(SQLModel, table=True):
    """Which Ray cluster a named pool is, and the scheduler driving it: two clusters may not share a name."""

    __tablename__ = "pools"

    name: str = Field(primary_key=True, max_length=64)
    head_address: str = Field(max_length=255)
    head_node_id: str = Field(max_length=64)
    scheduler_id: str = Field(max_length=64)
    heartbeat_at: datetime = Field(default_factory=utcnow)


class MachineState(StrEnum):
    pending = "pending"  # registered by its owner, waiting for an admin
    approved = "approved"  # may join and take work (unless paused, draining or over its daily cap)
    rejected = "rejected"
    revoked = "revoked"  # an admin withdrew it: no new work, its current run is checkpointed and moved
    left = "left"  # its owner took it out of the pool


class Machine(SQLModel, table=True):
    """A machine an owner lends to the pool: registered, approved, measured when it joins, controlled by its owner.

    What Ray calls a node is the machine while `observatory pool join` runs on it; the node carries the machine's
    id as a label, which is how the scheduler tells registered nodes from anything else that holds the token.
    """

    __tablename__ = "machines"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="users.id", index=True)
    name: str = Field(max_length=80)
    state: MachineState = Field(default=MachineState.pending, index=True, sa_type=enum_column(MachineState, 10))
    paused: bool = False
    draining: bool = False  # finishing its current run, then leaving
    hours_per_day: float | None = None  # the owner's cap on work started per UTC day; None: no cap
    show_owner: bool = False  # whether the public pool page names the owner
    # The machine's own credential for `observatory pool join` (only its sha256); rotated each time it is shown.
    token_hash: str | None = Field(default=None, unique=True, max_length=64)
    # Measured by `observatory pool join` on the machine itself, never typed in.
    gpu_model: str | None = Field(default=None, max_length=120)
    gpu_count: int = 0
    vram_gb: float = 0.0  # per GPU (the smallest, if they differ)
    cuda_capability: str | None = Field(default=None, max_length=10)
    cpus: int = 0
    memory_gb: float = 0.0
    release: str | None = Field(default=None, max_length=40)
    measured_at: datetime | None = None
    # The GPU model of its first join: a later join that reports another is flagged, and the machine is charged as
    # the cheaper of the two (the owner's machine measures itself; a changed card is registered anew).
    first_gpu_model: str | None = Field(default=None, max_length=120)
    gpu_flag: str = Field(default="", max_length=500)
    ray_node_id: str | None = Field(default=None, max_length=64)  # its Ray node when last seen online
    message: str = Field(default="", max_length=500)  # why it was rejected or revoked
    created_at: datetime = Field(default_factory=utcnow)
    decided_by: int | None = Field(default=None, foreign_key="users.id")
    decided_at: datetime | None = None
    last_contact_at: datetime | None = None
    # A volunteer's machine runs `observatory volunteer`: it pulls work units over HTTPS with its credential and
    # never joins Ray, so it needs no admin's approval; what it returns counts only once validated.
    volunteer: bool = False
    trust: int = 0  # validated results in a row; a proven wrong result sets it back to 0
    wrong_results: int = 0
    team: str = Field(default="", max_length=80)  # the volunteers' team its credit counts for ("": none)


class VolunteerCredit(SQLModel, table=True):
    """Validated work of a volunteer's machine: GPU-seconds of one agreeing result, scaled by its GPU class (the
    charge factor, so that an hour on a big card earns what it would cost). Written once per result."""

    __tablename__ = "volunteer_credits"
    __table_args__ = (UniqueConstraint("run_id", "attempt", name="uq_credit_run_attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    machine_id: int = Field(foreign_key="machines.id", index=True)
    owner_id: int = Field(foreign_key="users.id", index=True)
    run_id: int = Field(foreign_key="runs.id")
    attempt: int
    gpu_seconds: int
    credit: float  # GPU-seconds × the GPU class's factor
    created_at: datetime = Field(default_factory=utcnow)


class DonorShare(SQLModel, table=True):
    """A donor-share award: GPU-hours of a call's reserved share awarded to a contributor's proposal, bought with
    as many hours of the contributor's credit (spent once)."""

    __tablename__ = "donor_shares"

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="calls.id", index=True)
    proposal_id: int = Field(foreign_key="proposals.id", unique=True)
    owner_id: int = Field(foreign_key="users.id", index=True)
    award_id: int = Field(foreign_key="awards.id")
    gpu_hours: float
    credit_spent: float  # credit (GPU-seconds × factor) it used up: the hours awarded × 3600
    created_at: datetime = Field(default_factory=utcnow)
