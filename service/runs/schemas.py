from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from service.models import RunState


class ArtifactPublic(BaseModel):
    name: str
    kind: str
    sha256: str
    size: int
    media_type: str
    url: str


class AttemptPublic(BaseModel):
    number: int
    worker: int = 0  # which worker it is, in a run that several nodes train together
    state: str
    node_name: str | None
    started_at: datetime | None
    ended_at: datetime | None
    checkpoint_step: int
    message: str
    charged: int = 0  # GPU-seconds this attempt costs the award: debited less refunded
    refunded: int = 0  # GPU-seconds given back for work lost with a node
    verdict: str = ""  # a volunteer's result: agreed, wrong or unneeded once judged
    # A volunteer's training: the segments chosen to re-run, and how each landed; or, for a check, what it re-runs.
    validation: str = ""


class ChargePublic(BaseModel):
    """One ledger entry of a run."""

    attempt: int | None
    kind: str
    gpu_seconds: int  # positive for a debit, negative for a refund
    note: str
    at: datetime


class RunPublic(BaseModel):
    id: int
    proposal_id: int
    award_id: int
    group_id: int | None = None  # the family it is an expert or the router of
    job_kind: str
    state: RunState
    progress: float
    progress_detail: dict[str, Any]
    message: str
    gpus: int
    gpu_seconds: int = 0  # charged to the award: debits less refunds, in whole GPU-seconds
    cancel_requested: bool
    resume_step: int = 0
    attempts: list[AttemptPublic] = []
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # Waiting: queued, or handed to its node but its job has not begun there. Began: its first job's first report.
    waiting: bool = False
    began_at: datetime | None = None


class FamilyMember(BaseModel):
    """One run of a family: an expert (its cluster and how many images it has) or the router."""

    role: str  # "expert" or "router"
    cluster: int | None
    images: int  # the images it trains on: its cluster's, or the whole dataset's for the router
    node_name: str | None  # where its latest attempt runs or ran
    run: RunPublic


class FamilyPublic(BaseModel):
    """A family of experts: K expert runs, each on one cluster of the dataset's partition, and the router."""

    id: int
    award_id: int
    proposal_id: int
    k: int
    dataset: str
    partition: str
    members: list[FamilyMember]
    progress: float  # the mean of its runs' progress
    gpu_seconds: int  # charged to the award for all its runs
    created_at: datetime
    # The router's held-out accuracy per tenth of the noise schedule (least noise first), and chance, once trained.
    router_accuracy: list[float] | None = None
    chance: float | None = None
    versions: list[str] = []  # the model versions (name@N) registered from it
