"""The committee's side of review (admins): the ranked table, how each reviewer grades, releasing decisions.

Reviewers' names are the committee's to see; the teams never learn them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from statistics import fmean, median, pstdev

from sqlmodel import Session, select

from service.audit.service import record
from service.calls.service import awarded_gpu_hours, get_call
from service.db import lock
from service.errors import Conflict, Forbidden, NotFound
from service.mail import outbox
from service.models import (
    AssignmentState,
    Award,
    Call,
    CallKind,
    Proposal,
    ProposalState,
    Review,
    ReviewAssignment,
    ReviewRating,
    Role,
    User,
)
from service.proposals import states
from service.proposals.service import team
from service.review.feasibility import Feasibility, feasibility
from service.review.ranking import Grade, Ranked, rank
from service.timeutil import utcnow

RANKED_STATES = (ProposalState.under_review, ProposalState.accepted, ProposalState.declined)


def _committee(actor: User) -> None:
    if not actor.has(Role.admin):
        raise Forbidden("only the committee (admins) sees this")


def submitted_reviews(session: Session, call_id: int) -> list[tuple[ReviewAssignment, Review]]:
    return list(session.exec(select(ReviewAssignment, Review).join(Review, Review.assignment_id == ReviewAssignment.id)
                             .where(ReviewAssignment.call_id == call_id,
                                    ReviewAssignment.state == AssignmentState.submitted)))


def ranking(session: Session, call: Call) -> list[Ranked]:
    ids = list(session.exec(select(Proposal.id).where(Proposal.call_id == call.id, Proposal.state.in_(RANKED_STATES))
                            .order_by(Proposal.id)))
    grades = [Grade(a.reviewer_id, a.proposal_id, r.grade) for a, r in submitted_reviews(session, call.id)
              if a.proposal_id in set(ids)]
    return rank(ids, grades, call.triage_fraction)


@dataclass
class RankRow:
    ranked: Ranked
    proposal: Proposal
    team: list[User]
    award: Award | None
    feasibility: Feasibility
    reviews: list[tuple[User, ReviewAssignment, Review | None]] = field(default_factory=list)


def table(session: Session, *, actor: User, call_id: int) -> list[RankRow]:
    """The call's proposals in ranked order, each with its team, reviews, feasibility and award."""
    _committee(actor)
    call = get_call(session, call_id)
    rows = []
    assignments: dict[int, list[ReviewAssignment]] = defaultdict(list)
    for a in session.exec(select(ReviewAssignment).where(ReviewAssignment.call_id == call.id)
                          .order_by(ReviewAssignment.id)):
        assignments[a.proposal_id].append(a)
    calibrations: dict[str, list[float]] = {}
    for ranked in ranking(session, call):
        proposal = session.get(Proposal, ranked.proposal_id)
        row = RankRow(ranked=ranked, proposal=proposal, team=team(session, proposal.id),
                      award=session.exec(select(Award).where(Award.proposal_id == proposal.id)).first(),
                      feasibility=feasibility(session, proposal.job_plan, proposal.requested_gpu_hours,
                                              calibrations))
        for a in assignments[proposal.id]:
            review = session.exec(select(Review).where(Review.assignment_id == a.id)).first()
            row.reviews.append((session.get(User, a.reviewer_id), a, review))
        rows.append(row)
    return rows


def against_ranking(session: Session, call: Call, proposal_id: int, *, awarding: bool) -> str | None:
    """Why a decision goes against the panel's ranking (and so needs a recorded reason), or None."""
    if call.kind != CallKind.regular:
        return None
    found = next((r for r in ranking(session, call) if r.proposal_id == proposal_id), None)
    if found is None:
        return None
    if awarding and found.triaged:
        return f"it is ranked {found.position}, below the triage line"
    if not awarding and not found.triaged:
        return f"it is ranked {found.position}, above the triage line"
    return None


def release(session: Session, *, actor: User, call_id: int) -> int:
    """Publish the call's decisions: what is still under review is declined, and every team is told by e-mail.
    Returns how many proposals were declined here."""
    _committee(actor)
    call = lock(session, Call, call_id)
    if call is None:
        raise NotFound(f"no call {call_id}")
    if call.review_started_at is None:
        raise Conflict("the review has not started")
    if call.decisions_released_at is not None:
        raise Conflict(f"the decisions were released on {call.decisions_released_at:%Y-%m-%d %H:%M} UTC")
    declined = 0
    for proposal in session.exec(select(Proposal).where(Proposal.call_id == call.id,
                                                        Proposal.state == ProposalState.under_review)).all():
        states.move(session, proposal, ProposalState.declined, actor=actor, reason="not awarded when the decisions "
                                                                                    "were released")
        declined += 1
    call.decisions_released_at = utcnow()
    session.add(call)
    for proposal in session.exec(select(Proposal).where(Proposal.call_id == call.id,
                                                        Proposal.state.in_(states.DECIDED))):
        tell_decision(session, proposal, call)
    record(session, actor, "review.release", f"call:{call.id}", declined=declined,
           awarded_gpu_hours=awarded_gpu_hours(session, call.id))
    return declined


def tell_decision(session: Session, proposal: Proposal, call: Call) -> None:
    award = session.exec(select(Award).where(Award.proposal_id == proposal.id)).first()
    if proposal.state == ProposalState.accepted and award:
        outcome = f"was accepted: {award.gpu_hours:g} GPU-hours in priority class {award.priority}"
    else:
        outcome = "was not accepted this time"
    outbox.queue_all(session, team(session, proposal.id), f"Decision: {proposal.title}",
                     f"The proposal “{proposal.title}” in the call “{call.title}” {outcome}. The grade band and the "
                     "reviewers' comments for you are on the proposal's page in the portal.")


@dataclass
class ReviewerStat:
    reviewer: User
    reviews: int
    mean_grade: float | None
    versus_panel: float | None  # mean of (own grade − the other reviewers' mean on the same proposal); + is harsher
    helpfulness: float | None
    ratings: int
    grade_spread: float | None = None  # the standard deviation of their own grades (0 when all alike)
    versus_spread: float | None = None  # … of (own grade − the panel's): how steady their offset is
    turnaround_days: float | None = None  # median days from being asked to submitting


def reviewer_stats(session: Session, *, actor: User) -> list[ReviewerStat]:
    """Every reviewer's record across calls: how many reviews, how they grade against the panel, how helpful the
    PIs found them."""
    _committee(actor)
    rows = list(session.exec(select(ReviewAssignment, Review)
                             .join(Review, Review.assignment_id == ReviewAssignment.id)))
    by_proposal: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for a, r in rows:
        by_proposal[a.proposal_id].append((a.reviewer_id, r.grade))
    ratings = {rating.review_id: rating.helpfulness for rating in session.exec(select(ReviewRating))}
    per: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for a, r in rows:
        mine = per[a.reviewer_id]
        mine["grades"].append(r.grade)
        others = [g for rid, g in by_proposal[a.proposal_id] if rid != a.reviewer_id]
        if others:
            mine["versus"].append(r.grade - fmean(others))
        if r.id in ratings:
            mine["helpful"].append(ratings[r.id])
        mine["days"].append(max((r.submitted_at - a.created_at).total_seconds(), 0) / 86400)
    out = []
    for reviewer_id, stats in per.items():
        out.append(ReviewerStat(
            reviewer=session.get(User, reviewer_id), reviews=len(stats["grades"]),
            mean_grade=fmean(stats["grades"]) if stats["grades"] else None,
            versus_panel=fmean(stats["versus"]) if stats["versus"] else None,
            helpfulness=fmean(stats["helpful"]) if stats["helpful"] else None, ratings=len(stats["helpful"]),
            grade_spread=pstdev(stats["grades"]) if stats["grades"] else None,
            versus_spread=pstdev(stats["versus"]) if stats["versus"] else None,
            turnaround_days=median(stats["days"]) if stats["days"] else None))
    return sorted(out, key=lambda s: s.reviewer.name.casefold())
