"""Peer review: reviewers' queues and packets, the committee's ranking and decisions, the teams' feedback."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlmodel import select

from service.audit.service import entries
from service.deps import AdminUser, CurrentUser, SessionDep
from service.models import User
from service.review import assignments, committee, feedback, packets, public, reviews
from service.review.feedback import Feedback, RatingCreate
from service.review.packets import ReviewerPacket, Teaser
from service.review.reviews import ReviewCreate
from service.review.schemas import (
    AcceptedPublic,
    AuditPublic,
    ConflictDeclared,
    RankRowPublic,
    ReviewerStatPublic,
    ReviewStartPublic,
)
from service.types import IdPath

router = APIRouter(tags=["review"])


@router.post("/calls/{call_id}/review", response_model=ReviewStartPublic)
def start_review(call_id: IdPath, admin: AdminUser, session: SessionDep) -> ReviewStartPublic:
    """Start the review of a closed regular call (the chair): its proposals go under review, reviewers are assigned
    with conflicts excluded, and each reviewer gets one e-mail digest."""
    started = assignments.start_review(session, actor=admin, call_id=call_id)
    session.commit()
    return ReviewStartPublic(**started.__dict__)


@router.get("/calls/{call_id}/ranking", response_model=list[RankRowPublic])
def ranking(call_id: IdPath, admin: AdminUser, session: SessionDep) -> list[RankRowPublic]:
    """The call's proposals ranked by normalised, trimmed-mean grade, with the triage line, every review, and the
    plan's feasibility (the committee)."""
    return [public.rank_row_public(row) for row in committee.table(session, actor=admin, call_id=call_id)]


class Released(BaseModel):
    declined: int


@router.post("/calls/{call_id}/release", response_model=Released)
def release(call_id: IdPath, admin: AdminUser, session: SessionDep) -> Released:
    """Release the call's decisions (the chair): proposals not awarded are declined, and every team is told."""
    declined = committee.release(session, actor=admin, call_id=call_id)
    session.commit()
    return Released(declined=declined)


@router.get("/accepted", response_model=list[AcceptedPublic])
def accepted(session: SessionDep) -> list[AcceptedPublic]:
    """Accepted proposals: title, abstract, team and awarded GPU-hours. Public."""
    return public.accepted(session)


@router.get("/review/assignments", response_model=list[Teaser])
def my_assignments(user: CurrentUser, session: SessionDep) -> list[Teaser]:
    """Your review queue (reviewers): title and abstract of each proposal assigned to you."""
    return [packets.teaser(session, a) for a in assignments.queue_of(session, user)]


@router.get("/review/assignments/{assignment_id}", response_model=ReviewerPacket | Teaser)
def assignment(assignment_id: IdPath, user: CurrentUser, session: SessionDep) -> ReviewerPacket | Teaser:
    """One assignment: the teaser until you accept it, then the review packet (no team in a dual-anonymous call)."""
    return packets.packet(session, assignments.own_assignment(session, user, assignment_id))


@router.post("/review/assignments/{assignment_id}/accept", response_model=ReviewerPacket | Teaser)
def accept(assignment_id: IdPath, user: CurrentUser, session: SessionDep) -> ReviewerPacket | Teaser:
    """Take the assignment on, declaring no conflict; the packet follows."""
    a = assignments.accept(session, actor=user, assignment_id=assignment_id)
    session.commit()
    return packets.packet(session, a)


@router.post("/review/assignments/{assignment_id}/conflict", response_model=Teaser)
def declare_conflict(assignment_id: IdPath, data: ConflictDeclared, user: CurrentUser,
                     session: SessionDep) -> Teaser:
    """Declare a conflict of interest: the proposal goes to another reviewer."""
    a = assignments.own_assignment(session, user, assignment_id)
    assignments.declare_conflict(session, actor=user, assignment_id=assignment_id, reason=data.reason)
    session.commit()
    return packets.teaser(session, a)


@router.put("/review/assignments/{assignment_id}/review", response_model=ReviewerPacket | Teaser)
def submit_review(assignment_id: IdPath, data: ReviewCreate, user: CurrentUser,
                  session: SessionDep) -> ReviewerPacket | Teaser:
    """Submit (or revise, until the decisions are released) your review."""
    reviews.submit(session, actor=user, assignment_id=assignment_id, data=data)
    session.commit()
    return packets.packet(session, assignments.own_assignment(session, user, assignment_id))


@router.get("/review/reviewers", response_model=list[ReviewerStatPublic])
def reviewer_record(admin: AdminUser, session: SessionDep) -> list[ReviewerStatPublic]:
    """Each reviewer's record (the committee): reviews, grades against the panel, helpfulness as PIs rated it."""
    return [ReviewerStatPublic(reviewer_id=s.reviewer.id, name=s.reviewer.name, reviews=s.reviews,
                               mean_grade=s.mean_grade, versus_panel=s.versus_panel, helpfulness=s.helpfulness,
                               ratings=s.ratings, grade_spread=s.grade_spread, versus_spread=s.versus_spread,
                               turnaround_days=s.turnaround_days)
            for s in committee.reviewer_stats(session, actor=admin)]


@router.get("/proposals/{proposal_id}/feedback", response_model=Feedback)
def proposal_feedback(proposal_id: IdPath, user: CurrentUser, session: SessionDep) -> Feedback:
    """The team's feedback once the decisions are released: the grade band and the reviewers' comments for the PI."""
    return feedback.feedback(session, actor=user, proposal_id=proposal_id)


@router.put("/proposals/{proposal_id}/reviews/{review_id}/rating", response_model=Feedback)
def rate_review(proposal_id: IdPath, review_id: IdPath, data: RatingCreate, user: CurrentUser,
                session: SessionDep) -> Feedback:
    """Rate how helpful a review was, 1 to 5 (the PI, after the decisions)."""
    feedback.rate(session, actor=user, proposal_id=proposal_id, review_id=review_id, helpfulness=data.helpfulness)
    session.commit()
    return feedback.feedback(session, actor=user, proposal_id=proposal_id)


@router.get("/audit", response_model=list[AuditPublic])
def audit_log(admin: AdminUser, session: SessionDep) -> list[AuditPublic]:
    """The newest 500 entries of the audit log (admins): decisions, overrides, role changes, awards."""
    rows = entries(session, admin)
    names = {u.id: u.name for u in session.exec(select(User).where(User.id.in_({e.actor_id for e in rows} | {0})))}
    return [AuditPublic(id=e.id, at=e.at, actor=names.get(e.actor_id), action=e.action, subject=e.subject,
                        detail=e.detail) for e in rows]
