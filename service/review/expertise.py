"""Expertise in matching: reviewers keep keywords and subject areas, proposals name a subject and keywords, and
reviewers bid on a call's proposals between its deadline and the start of its review (eager, willing, not my
field). A reviewer's score for a proposal is how many of their words the proposal names, plus their bid; the
chair sees the proposed assignments with these scores and each reviewer's record, and may force or avoid a pair
before the review starts. Conflicts always win: a conflicted pair is never assigned, forced or not."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from service.audit.service import record
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.models import (
    AssignmentChoice,
    Bid,
    Call,
    CallKind,
    Proposal,
    ProposalMember,
    ProposalState,
    ReviewBid,
    Role,
    User,
)
from service.timeutil import utcnow
from service.types import words

BID_WEIGHT = {Bid.eager: 2.0, Bid.willing: 1.0, Bid.not_my_field: -3.0}
CHOICES = ("force", "avoid")


def overlap(expertise: list[str], proposal: Proposal) -> int:
    """How many of the reviewer's words the proposal names (its keywords and its subject)."""
    named = set(words([*proposal.keywords, proposal.subject]))
    return len(set(words(expertise)) & named)


def scores(session: Session, call: Call, proposals: list[Proposal], panel: list[User]) -> dict[tuple[int, int], float]:
    """(reviewer, proposal) -> expertise overlap plus bid weight, where it is not zero."""
    bids = {(b.reviewer_id, b.proposal_id): b.bid for b in session.exec(
        select(ReviewBid).where(ReviewBid.call_id == call.id))}
    out: dict[tuple[int, int], float] = {}
    for reviewer in panel:
        for proposal in proposals:
            value = overlap(reviewer.expertise or [], proposal) + BID_WEIGHT.get(bids.get((reviewer.id,
                                                                                         proposal.id)), 0.0)
            if value:
                out[(reviewer.id, proposal.id)] = value
    return out


def choices(session: Session, call_id: int) -> tuple[list[tuple[int, int]], set[tuple[int, int]]]:
    """The chair's forced pairs (in the order made) and avoided pairs."""
    made = list(session.exec(select(AssignmentChoice).where(AssignmentChoice.call_id == call_id)
                             .order_by(AssignmentChoice.id)))
    return ([(c.reviewer_id, c.proposal_id) for c in made if c.choice == "force"],
            {(c.reviewer_id, c.proposal_id) for c in made if c.choice == "avoid"})


def before_review(session: Session, call_id: int) -> Call:
    call = session.get(Call, call_id)
    if call is None:
        raise NotFound(f"no call {call_id}")
    if call.kind != CallKind.regular:
        raise Conflict("only regular calls are peer reviewed")
    if call.review_started_at is not None:
        raise Conflict(f"the review of '{call.title}' has started: bids and the chair's choices are closed")
    return call


def bidding_open(session: Session, call_id: int) -> Call:
    """A call whose bidding is open: past its deadline, its review not started."""
    call = before_review(session, call_id)
    if utcnow() < call.closes_at:
        raise Conflict(f"bidding opens at the call's deadline, {call.closes_at:%Y-%m-%d %H:%M} UTC")
    return call


def _submitted(session: Session, call: Call, proposal_id: int) -> Proposal:
    proposal = session.get(Proposal, proposal_id)
    if proposal is None or proposal.call_id != call.id or proposal.state != ProposalState.submitted:
        raise NotFound(f"no submitted proposal {proposal_id} in this call")
    return proposal


def bid(session: Session, reviewer: User, proposal_id: int, value: Bid) -> ReviewBid:
    """A reviewer's bid, between the call's deadline and the start of its review (their own proposals aside)."""
    if not reviewer.has(Role.reviewer):
        raise Forbidden("only reviewers bid")
    proposal = session.get(Proposal, proposal_id)
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    call = bidding_open(session, proposal.call_id)
    _submitted(session, call, proposal_id)
    if session.exec(select(ProposalMember).where(ProposalMember.proposal_id == proposal_id,
                                                 ProposalMember.user_id == reviewer.id)).first():
        raise Conflict("you are on this proposal's team: it will not be yours to review")
    found = session.exec(select(ReviewBid).where(ReviewBid.proposal_id == proposal_id,
                                                 ReviewBid.reviewer_id == reviewer.id)).first()
    found = found or ReviewBid(call_id=call.id, proposal_id=proposal_id, reviewer_id=reviewer.id, bid=value)
    found.bid, found.created_at = value, utcnow()
    session.add(found)
    session.flush()
    return found


def choose(session: Session, admin: User, call_id: int, proposal_id: int, reviewer_id: int,
           choice: str | None) -> AssignmentChoice | None:
    """The chair forces or avoids a pair before the review starts (None: takes the choice back); a pair that is a
    conflict cannot be forced."""
    if not admin.has(Role.admin):
        raise Forbidden("only the chair (admins) chooses reviewers")
    if choice is not None and choice not in CHOICES:
        raise Invalid(f"choice: one of {', '.join(CHOICES)}, or null to take it back")
    call = before_review(session, call_id)
    _submitted(session, call, proposal_id)
    reviewer = session.get(User, reviewer_id)
    if reviewer is None or not reviewer.has(Role.reviewer):
        raise NotFound(f"no reviewer {reviewer_id}")
    if choice == "force":
        from service.review.assignments import automatic_conflicts

        why = automatic_conflicts(session, call, [proposal_id], [reviewer]).get((reviewer_id, proposal_id))
        if why:
            raise Conflict(f"{reviewer.name} cannot review this proposal: {why}")
    found = session.exec(select(AssignmentChoice).where(AssignmentChoice.proposal_id == proposal_id,
                                                        AssignmentChoice.reviewer_id == reviewer_id)).first()
    if choice is None:
        if found is not None:
            session.delete(found)
    else:
        found = found or AssignmentChoice(call_id=call.id, proposal_id=proposal_id, reviewer_id=reviewer_id,
                                          choice=choice, made_by=admin.id)
        found.choice, found.made_by = choice, admin.id
        session.add(found)
    session.flush()
    record(session, admin, "review.choice", f"proposal:{proposal_id}", reviewer=reviewer_id, choice=choice)
    return found if choice is not None else None


@dataclass(frozen=True)
class Proposed:
    proposal_id: int
    title: str
    reviewer_id: int
    reviewer: str
    score: float
    forced: bool


def preview(session: Session, admin: User, call_id: int) -> tuple[list[Proposed], dict[int, int]]:
    """The assignments the review's start would make now, with their scores, and the shortfalls."""
    if not admin.has(Role.admin):
        raise Forbidden("only the chair (admins) sees the proposed assignments")
    from service.review import assignments

    call = before_review(session, call_id)
    pairs, short, score, forced = assignments.proposed(session, call)
    titles = {p.id: p.title for p in session.exec(select(Proposal).where(Proposal.call_id == call.id))}
    names = {u.id: u.name for u in assignments.reviewers(session)}
    shown = [Proposed(p, titles.get(p, ""), r, names.get(r, str(r)), score.get((r, p), 0.0), (r, p) in forced)
             for r, p in pairs]
    return sorted(shown, key=lambda x: (x.proposal_id, -x.score, x.reviewer_id)), short
