from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from service.proposals.outcomes import OutcomePublic
from service.review.feasibility import Feasibility
from service.types import text


class ReviewStartPublic(BaseModel):
    proposals: int
    assignments: int
    shortfalls: dict[int, int]


class ConflictDeclared(BaseModel):
    reason: text(1000, 1)


class ReviewerReview(BaseModel):
    reviewer_id: int
    reviewer_name: str
    state: str
    conflict_reason: str
    grade: float | None
    expertise: str | None
    for_committee: str | None
    for_pi: str | None


class RankRowPublic(BaseModel):
    position: int
    proposal_id: int
    title: str
    state: str
    team: list[str]
    requested_gpu_hours: float
    score: float | None
    raw_mean: float | None
    reviews: int
    triaged: bool
    feasibility: Feasibility
    awarded_gpu_hours: float | None
    priority: str | None
    panel: list[ReviewerReview]


class ReviewerStatPublic(BaseModel):
    reviewer_id: int
    name: str
    reviews: int
    mean_grade: float | None
    versus_panel: float | None
    helpfulness: float | None
    ratings: int
    grade_spread: float | None = None
    versus_spread: float | None = None
    turnaround_days: float | None = None


class AcceptedPublic(BaseModel):
    proposal_id: int
    call_title: str
    title: str
    abstract: str
    team: list[str]
    awarded_gpu_hours: float
    awarded_at: datetime
    outcomes: list[OutcomePublic] = []  # papers, preprints, datasets, software that came of it


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor: str | None
    action: str
    subject: str
    detail: dict
