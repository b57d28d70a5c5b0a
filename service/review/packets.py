"""What a reviewer may read: a teaser (title and abstract) until they accept, then the packet.

Packets are built from the proposal's structured fields and never from `ProposalPublic`: in a dual-anonymous call
they carry no names, e-mails, institutions, ORCID iDs or account numbers of the team; otherwise they name the team
(names and institutions, never e-mails).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, select

from service.models import AssignmentState, Call, Proposal, ProposalMember, Review, ReviewAssignment, User
from service.review.feasibility import Feasibility, feasibility


class TeamCredit(BaseModel):
    name: str
    institution: str
    role: str


class ReviewPublic(BaseModel):
    grade: float
    expertise: str
    for_committee: str
    for_pi: str
    submitted_at: datetime


class Teaser(BaseModel):
    assignment_id: int
    state: AssignmentState
    call_title: str
    title: str
    abstract: str
    conflict_reason: str


class ReviewerPacket(Teaser):
    justification: str
    requested_gpu_hours: float
    job_kind: str
    job_plan: dict[str, Any]
    feasibility: Feasibility
    dual_anonymous: bool
    team: list[TeamCredit] | None  # None in a dual-anonymous call
    review: ReviewPublic | None


def teaser(session: Session, a: ReviewAssignment) -> Teaser:
    proposal, call = session.get(Proposal, a.proposal_id), session.get(Call, a.call_id)
    return Teaser(assignment_id=a.id, state=a.state, call_title=call.title, title=proposal.title,
                  abstract=proposal.abstract, conflict_reason=a.conflict_reason)


def packet(session: Session, a: ReviewAssignment) -> ReviewerPacket | Teaser:
    """The packet once accepted; the teaser before (or after a declared conflict)."""
    if a.state not in (AssignmentState.accepted, AssignmentState.submitted):
        return teaser(session, a)
    proposal, call = session.get(Proposal, a.proposal_id), session.get(Call, a.call_id)
    team = None
    if not call.dual_anonymous:
        team = [TeamCredit(name=u.name, institution=u.institution, role=m.role)
                for m, u in session.exec(select(ProposalMember, User).join(User)
                                         .where(ProposalMember.proposal_id == proposal.id))]
    review = session.exec(select(Review).where(Review.assignment_id == a.id)).first()
    return ReviewerPacket(
        **teaser(session, a).model_dump(), justification=proposal.justification,
        requested_gpu_hours=proposal.requested_gpu_hours, job_kind=proposal.job_kind, job_plan=proposal.job_plan,
        feasibility=feasibility(session, proposal.job_plan, proposal.requested_gpu_hours),
        dual_anonymous=call.dual_anonymous, team=team,
        review=ReviewPublic.model_validate(review, from_attributes=True) if review else None)
