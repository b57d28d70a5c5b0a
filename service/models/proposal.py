"""Proposals, their members and their awards."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class PriorityClass(StrEnum):
    """An award's scheduling class: all of A's queued runs go before B's, B's before C's."""

    A = "A"
    B = "B"  # until review sets it
    C = "C"


class ProposalState(StrEnum):
    """See `service.proposals.states` for the transitions."""

    draft = "draft"
    submitted = "submitted"
    under_review = "under_review"
    accepted = "accepted"
    declined = "declined"
    withdrawn = "withdrawn"


class MemberRole(StrEnum):
    pi = "pi"
    coi = "coi"


class Proposal(SQLModel, table=True):
    __tablename__ = "proposals"

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="calls.id", index=True)
    pi_id: int = Field(foreign_key="users.id", index=True)
    title: str = Field(max_length=200)
    abstract: str = Field(max_length=5_000)
    justification: str = Field(max_length=20_000)
    requested_gpu_hours: float
    job_kind: str = Field(max_length=40)
    job_plan: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # What it is about, for matching reviewers: a subject area and keywords.
    subject: str = Field(default="", max_length=100)
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    state: ProposalState = Field(default=ProposalState.draft, sa_type=enum_column(ProposalState, 20))
    # A supplemental proposal tops up this award (its PI's); it carries no job plan of its own.
    parent_award_id: int | None = None  # an award id (no foreign key: awards refer to proposals)
    donor_claim: bool = False  # its PI asks for a donor share, in proportion to their volunteers' credit
    submitted_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ProposalMember(SQLModel, table=True):
    __tablename__ = "proposal_members"

    proposal_id: int = Field(foreign_key="proposals.id", primary_key=True)
    user_id: int = Field(foreign_key="users.id", primary_key=True)
    role: MemberRole = Field(default=MemberRole.pi, sa_type=enum_column(MemberRole, 10))


class Award(SQLModel, table=True):
    __tablename__ = "awards"

    id: int | None = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposals.id", unique=True)
    gpu_hours: float
    priority: PriorityClass = Field(default=PriorityClass.B, sa_type=enum_column(PriorityClass, 1))
    awarded_by: int = Field(foreign_key="users.id")
    awarded_at: datetime = Field(default_factory=utcnow)
    exclusive_until: datetime
    # A supplement's GPU-hours are credited to the award it tops up; it has no account or run of its own.
    tops_up_award_id: int | None = Field(default=None, foreign_key="awards.id")


class ChangeState(StrEnum):
    pending = "pending"
    approved = "approved"
    refused = "refused"


class ChangeRequest(SQLModel, table=True):
    """A further run on an award that goes beyond what the call lets a team decide alone (another job kind, a
    model or dataset the proposal did not name, more than a set share of the award): the committee decides."""

    __tablename__ = "change_requests"

    id: int | None = Field(default=None, primary_key=True)
    award_id: int = Field(foreign_key="awards.id", index=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    requested_by: int = Field(foreign_key="users.id")
    job_plan: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    sweep: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # field, values
    beyond: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # what needs approval
    reason: str = Field(default="", max_length=5_000)
    state: ChangeState = Field(default=ChangeState.pending, index=True, sa_type=enum_column(ChangeState, 10))
    decided_by: int | None = Field(default=None, foreign_key="users.id")
    decided_at: datetime | None = None
    note: str = Field(default="", max_length=2_000)
    run_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class OutcomeKind(StrEnum):
    paper = "paper"
    preprint = "preprint"
    dataset = "dataset"
    software = "software"
    other = "other"


class Outcome(SQLModel, table=True):
    """What came of an award: a paper, preprint, dataset or software its team records (a DOI or a URL)."""

    __tablename__ = "outcomes"

    id: int | None = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    kind: OutcomeKind = Field(sa_type=enum_column(OutcomeKind, 20))
    title: str = Field(max_length=300)
    doi: str = Field(default="", max_length=200)
    url: str = Field(default="", max_length=500)
    year: int | None = None
    added_by: int = Field(foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)
