"""What a team learns from review once the call's decisions are released: its grade band and the comments meant
for it, from reviewers numbered 1, 2, 3 (never named). The PI rates each review's helpfulness."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlmodel import Session, select

from service.errors import NotFound
from service.models import AssignmentState, Call, CallKind, Review, ReviewAssignment, ReviewRating, User
from service.proposals import access
from service.proposals.access import Act
from service.review.committee import ranking
from service.review.ranking import band
from service.timeutil import utcnow


class ReviewForTeam(BaseModel):
    review_id: int
    label: str
    expertise: str
    for_pi: str
    helpfulness: int | None


class Feedback(BaseModel):
    released: bool
    band: str | None
    reviews: list[ReviewForTeam]


class RatingCreate(BaseModel):
    helpfulness: int = Field(ge=1, le=5, description="1: not helpful, 5: very helpful.")


def _released(call: Call) -> bool:
    return call.kind == CallKind.regular and call.decisions_released_at is not None


def feedback(session: Session, *, actor: User, proposal_id: int) -> Feedback:
    proposal = access.get(session, actor, proposal_id)
    call = session.get(Call, proposal.call_id)
    if not _released(call):
        return Feedback(released=False, band=None, reviews=[])
    ranked = ranking(session, call)
    mine = next((r for r in ranked if r.proposal_id == proposal_id), None)
    rows = session.exec(select(Review).join(ReviewAssignment, Review.assignment_id == ReviewAssignment.id)
                        .where(ReviewAssignment.proposal_id == proposal_id,
                               ReviewAssignment.state == AssignmentState.submitted).order_by(Review.id)).all()
    ratings = {r.review_id: r.helpfulness for r in session.exec(
        select(ReviewRating).where(ReviewRating.review_id.in_([r.id for r in rows] or [0])))}
    return Feedback(released=True, band=band(mine.score, mine.position, len(ranked)) if mine else None,
                    reviews=[ReviewForTeam(review_id=r.id, label=f"Reviewer {i}", expertise=r.expertise,
                                           for_pi=r.for_pi, helpfulness=ratings.get(r.id))
                             for i, r in enumerate(rows, start=1)])


def rate(session: Session, *, actor: User, proposal_id: int, review_id: int, helpfulness: int) -> ReviewRating:
    proposal = access.get(session, actor, proposal_id)
    access.get(session, actor, proposal_id, Act.rate, released=_released(session.get(Call, proposal.call_id)))
    review = session.get(Review, review_id)
    assignment = session.get(ReviewAssignment, review.assignment_id) if review else None
    if assignment is None or assignment.proposal_id != proposal_id:
        raise NotFound(f"no review {review_id} of this proposal")
    rating = session.get(ReviewRating, review_id) or ReviewRating(review_id=review_id, helpfulness=helpfulness,
                                                                  rated_by=actor.id)
    rating.helpfulness, rating.rated_by, rating.rated_at = helpfulness, actor.id, utcnow()
    session.add(rating)
    session.flush()
    return rating
