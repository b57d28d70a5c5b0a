"""Reviews: a grade from 1.0 (best) to 5.0, the reviewer's expertise, a comment for the committee and one for the
PI. A review can be revised until the call's decisions are released."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field
from sqlmodel import Session, select

from service.errors import Conflict
from service.models import AssignmentState, Expertise, Review, ReviewAssignment, User
from service.review.assignments import move_assignment, own_assignment, refuse_if_conflicted, still_open
from service.timeutil import utcnow
from service.types import text

GradeValue = Annotated[float, Field(ge=1.0, le=5.0, allow_inf_nan=False, description="1.0 is best, 5.0 worst.")]


class ReviewCreate(BaseModel):
    grade: GradeValue
    expertise: Expertise
    for_committee: text(10_000, 1)
    for_pi: text(10_000, 1)


def submit(session: Session, *, actor: User, assignment_id: int, data: ReviewCreate) -> Review:
    a: ReviewAssignment = own_assignment(session, actor, assignment_id, for_update=True)
    still_open(session, a)
    refuse_if_conflicted(session, a)
    review = session.exec(select(Review).where(Review.assignment_id == a.id)).first()
    if a.state == AssignmentState.accepted:
        move_assignment(session, a, {AssignmentState.accepted}, AssignmentState.submitted)
    elif a.state != AssignmentState.submitted:
        raise Conflict("accept the assignment before reviewing (or it was handed on after a conflict)")
    review = review or Review(assignment_id=a.id, grade=0, expertise=data.expertise, for_committee="", for_pi="")
    review.grade, review.expertise = round(data.grade, 1), data.expertise
    review.for_committee, review.for_pi, review.submitted_at = data.for_committee, data.for_pi, utcnow()
    session.add(review)
    session.flush()
    return review
