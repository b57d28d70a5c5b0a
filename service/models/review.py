"""Peer review: reviewers' assignments and reviews, the PIs' ratings of them, and the chair's overrides."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class AssignmentState(StrEnum):
    invited = "invited"  # the reviewer sees title and abstract, and accepts or declares a conflict
    accepted = "accepted"  # the reviewer sees the packet and writes the review
    conflict = "conflict"  # declared by the reviewer; the proposal goes to someone else
    submitted = "submitted"  # the review is in


class Expertise(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class Bid(StrEnum):
    eager = "eager"
    willing = "willing"
    not_my_field = "not_my_field"


class ReviewBid(SQLModel, table=True):
    """A reviewer's bid on a proposal of a call, made between its deadline and the start of its review."""

    __tablename__ = "review_bids"
    __table_args__ = (UniqueConstraint("proposal_id", "reviewer_id", name="uq_bid_once"),)

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="calls.id", index=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    reviewer_id: int = Field(foreign_key="users.id", index=True)
    bid: Bid = Field(sa_type=enum_column(Bid, 20))
    created_at: datetime = Field(default_factory=utcnow)


class AssignmentChoice(SQLModel, table=True):
    """The chair's choice before a review starts: this reviewer on this proposal (force), or not (avoid)."""

    __tablename__ = "assignment_choices"
    __table_args__ = (UniqueConstraint("proposal_id", "reviewer_id", name="uq_choice_once"),)

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="calls.id", index=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    reviewer_id: int = Field(foreign_key="users.id")
    choice: str = Field(max_length=10)  # force or avoid
    made_by: int = Field(foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)


class ReviewAssignment(SQLModel, table=True):
    __tablename__ = "review_assignments"
    __table_args__ = (UniqueConstraint("proposal_id", "reviewer_id", name="uq_assignment_once"),)

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="calls.id", index=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    reviewer_id: int = Field(foreign_key="users.id", index=True)
    state: AssignmentState = Field(default=AssignmentState.invited, sa_type=enum_column(AssignmentState, 10))
    conflict_reason: str = Field(default="", max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)
    responded_at: datetime | None = None


class Review(SQLModel, table=True):
    """Grades run from 1.0 (best) to 5.0; one comment is for the committee alone, one is passed to the PI."""

    __tablename__ = "reviews"

    id: int | None = Field(default=None, primary_key=True)
    assignment_id: int = Field(foreign_key="review_assignments.id", unique=True)
    grade: float
    expertise: Expertise = Field(sa_type=enum_column(Expertise, 10))
    for_committee: str = Field(max_length=10_000)
    for_pi: str = Field(max_length=10_000)
    submitted_at: datetime = Field(default_factory=utcnow)


class ReviewRating(SQLModel, table=True):
    """How helpful the PI found a review (1 least, 5 most); the committee sees these per reviewer."""

    __tablename__ = "review_ratings"

    review_id: int = Field(foreign_key="reviews.id", primary_key=True)
    helpfulness: int
    rated_by: int = Field(foreign_key="users.id")
    rated_at: datetime = Field(default_factory=utcnow)


class ProposalInvite(SQLModel, table=True):
    """A single-use link by which someone joins a proposal's team as co-investigator; only its sha256 is kept."""

    __tablename__ = "proposal_invites"

    id: int | None = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    email: str = Field(max_length=320)
    created_by: int = Field(foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_by: int | None = Field(default=None, foreign_key="users.id")
    used_at: datetime | None = None
    revoked_at: datetime | None = None
