"""Runs of awarded work on the pool, and the artifacts they leave in the archive."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class RunState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class RunGroup(SQLModel, table=True):
    """Runs of one award that make one thing together: a family of K experts, each trained alone on one cluster of
    a partition of the dataset, and the router that weighs them. Each run keeps its own attempts and charges."""

    __tablename__ = "run_groups"

    id: int | None = Field(default=None, primary_key=True)
    award_id: int = Field(foreign_key="awards.id", index=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    kind: str = Field(default="family", max_length=20)
    k: int
    partition: str = Field(max_length=80)  # the partition's digest
    dataset: str = Field(max_length=120)  # name@version
    # A rebuild after withdrawals: the family version it replaces, and its experts kept as they were (cluster ->
    # their entry on that version's card), which the rebuild does not train again. (A plain id: a foreign key
    # would make model_versions, runs and run_groups refer to each other in a circle.)
    replaces_id: int | None = None
    requested_by: int | None = Field(default=None, foreign_key="users.id")  # the admin who asked for the rebuild
    kept: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}"))
    # A sweep (kind "sweep"): one plan run once for each value of one field, compared on one page.
    field: str = Field(default="", max_length=60)
    values: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    created_at: datetime = Field(default_factory=utcnow)


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    award_id: int = Field(foreign_key="awards.id", index=True)
    # The family (run group) this run is an expert or the router of; None for a run of its own.
    group_id: int | None = Field(default=None, foreign_key="run_groups.id", index=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    job_kind: str = Field(max_length=40)
    job_plan: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: RunState = Field(default=RunState.queued, index=True, sa_type=enum_column(RunState, 20))
    progress: float = 0.0
    progress_detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    message: str = Field(default="", max_length=2_000)
    gpus: int = 1
    # Random per run: with the attempt it names the Ray job, so that a database reset against a long-lived
    # cluster can never mistake an old job for a new run with the same id.
    key: str = Field(default_factory=lambda: secrets.token_hex(6), max_length=12)
    attempt: int = 0  # the number of its latest attempt (see RunAttempt)
    submission_id: str | None = Field(default=None, max_length=100)
    # The pool (by its configured name) that runs its current attempt: only that pool's scheduler touches it.
    pool: str | None = Field(default=None, max_length=64)
    claim_token: str | None = Field(default=None, max_length=64)
    claim_expires_at: datetime | None = None
    cancel_requested: bool = False
    # Why the scheduler asked the job to stop, other than a cancel (e.g. the award is used up).
    stop_reason: str | None = Field(default=None, max_length=200)
    # The last resumable checkpoint shipped off a node: the next attempt starts from it.
    resume_sha256: str | None = Field(default=None, max_length=64)
    resume_step: int = 0
    retries_used: int = 0  # attempts killed on a node that stayed up, retried from the last checkpoint
    # Run by volunteers: how many agreeing results it needs before they count (0: not a volunteers' unit).
    replicas: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    doi: str = Field(default="", max_length=200)  # a DOI an operator registered for its outputs ("" for none)
    # A run a team member queued on the award after it was made (phase II); None: the award's own run(s).
    requested_by: int | None = Field(default=None, foreign_key="users.id")


class AttemptState(StrEnum):
    starting = "starting"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    lost = "lost"
    stopped = "stopped"


class RunAttempt(SQLModel, table=True):
    """One try at a run on one node: written before it is submitted, ended once its outcome is known.

    Its token (kept here only as a sha256) lets the job fetch its inputs and send its checkpoints, log and outputs
    for this attempt alone, and only while the attempt is live.
    """

    __tablename__ = "run_attempts"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    number: int
    pool: str = Field(max_length=64, index=True)
    submission_id: str = Field(max_length=100, unique=True)
    token_hash: str = Field(max_length=64, unique=True)
    state: AttemptState = Field(default=AttemptState.starting, index=True, sa_type=enum_column(AttemptState, 20))
    node_id: str | None = Field(default=None, max_length=64)
    node_name: str | None = Field(default=None, max_length=200)
    machine_id: int | None = Field(default=None, foreign_key="machines.id", index=True)  # the owner's machine
    worker: int = 0  # which of a run's workers it is, when several nodes train the run together (its data shard)
    # Why this attempt alone is asked to stop (its machine is leaving) while the run goes on with its other workers.
    stop_reason: str | None = Field(default=None, max_length=200)
    gpus: int = 1
    charge_factor: float = 1.0
    resume_sha256: str | None = Field(default=None, max_length=64)  # the checkpoint it started from
    resume_step: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None  # when the job first reported from its node
    last_heard_at: datetime | None = None
    charged_until: datetime | None = None
    checkpoint_sha256: str | None = Field(default=None, max_length=64)
    checkpoint_step: int = 0
    checkpoint_size: int = Field(default=0, sa_type=BigInteger)
    checkpoint_at: datetime | None = None
    log_bytes: int = 0
    exit_code: int | None = None  # as the job reported it (None: it never said)
    reported: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    ended_at: datetime | None = None
    message: str = Field(default="", max_length=2_000)
    # Ticks that failed to record this attempt's end (outages aside), counted at most once per tick interval.
    finish_failures: int = 0
    finish_failed_at: datetime | None = None
    # What its job sent: outputs (each send counts, a name sent again too) and the bytes of everything it sent.
    output_sends: int = 0
    uploaded_bytes: int = Field(default=0, sa_type=BigInteger)
    # A volunteer's outputs, held here (name -> {sha256, size}) until validation makes them the run's artifacts.
    held_outputs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False,
                                                                                server_default="{}"))
    # What validation made of a volunteer's result: agreed, wrong, or outvoted ("" until it is judged).
    verdict: str = Field(default="", max_length=20)
    # A volunteer's training: the states it shipped while it trained, [[step, sha256, size], ...] by step, and the
    # segments between them chosen to be re-run by others (service.volunteers.segments).
    held_checkpoints: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False,
                                                                               server_default="[]"))
    segments: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    worker_version: str = Field(default="", max_length=40)  # the release of the observatory its node ran
    # A check: this attempt re-runs one segment of another attempt's training ({} for the unit's own attempts).
    segment_check: dict[str, Any] = Field(default_factory=dict,
                                          sa_column=Column(JSON, nullable=False, server_default="{}"))


class RunEvent(SQLModel, table=True):
    """The audit trail: one row per state change of a run or one of its attempts."""

    __tablename__ = "run_events"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    attempt: int | None = None
    subject: str = Field(default="run", max_length=10)  # "run" or "attempt"
    from_state: str = Field(max_length=20)
    to_state: str = Field(max_length=20)
    actor: str = Field(max_length=320)
    reason: str = Field(default="", max_length=2_000)
    at: datetime = Field(default_factory=utcnow)


class AttemptLogChunk(SQLModel, table=True):
    """A job's log as its node sent it, in order: read back by offset, never whole on every tick."""

    __tablename__ = "attempt_log_chunks"

    attempt_id: int = Field(foreign_key="run_attempts.id", primary_key=True)
    offset: int = Field(primary_key=True)
    text: str


class Artifact(SQLModel, table=True):
    """One output file of a run, stored content-addressed under archive/objects/."""

    __tablename__ = "artifacts"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=40)
    sha256: str = Field(max_length=64, index=True)
    size: int = Field(sa_type=BigInteger)  # outputs may be larger than 2 GiB
    media_type: str = Field(max_length=100)
    attempt: int | None = None  # the attempt that delivered it (None: written by the observatory)
    created_at: datetime = Field(default_factory=utcnow)
