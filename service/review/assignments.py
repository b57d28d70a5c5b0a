"""Assigning reviewers to a call's proposals, and their answers: accept, or declare a conflict.

Conflicts found without asking: the reviewer is on the proposal's team; shares an institution with a team member;
or is on the team of a competing proposal in the same call. They are looked for when reviewers are assigned, again
whenever a team of the call changes while it is under review (`recheck`: a conflicted reviewer is withdrawn, with
a review already in, and the proposal handed to another), and when a reviewer accepts or submits. A conflict the
reviewer declares sends the proposal to another reviewer at once. Each reviewer gets one e-mail digest of new
assignments, listing titles only.

An assignment:

    invited   -> accepted    the reviewer, having seen title and abstract, takes it on
    invited   -> conflict    the reviewer declares a conflict (with a reason kept for the committee)
    accepted  -> conflict    likewise, after seeing the packet, until the review is in
    accepted  -> submitted   the review is in (it may be revised until the decisions are released)
    invited | accepted | submitted -> conflict
                             a conflict found after the assignment (the reviewer joined a team of the call): the
                             reviewer is withdrawn, and a review already in no longer counts
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, select

from service.audit.service import record
from service.db import lock
from service.errors import Conflict, Forbidden, NotFound
from service.mail import outbox
from service.models import (
    AssignmentState,
    Call,
    CallKind,
    Proposal,
    ProposalMember,
    ProposalState,
    ReviewAssignment,
    Role,
    User,
)
from service.proposals import states
from service.review import matching
from service.timeutil import utcnow

ACTIVE = frozenset({AssignmentState.invited, AssignmentState.accepted, AssignmentState.submitted})


@dataclass
class ReviewStart:
    proposals: int
    assignments: int
    shortfalls: dict[int, int]  # proposal id -> reviewers still missing


def reviewers(session: Session) -> list[User]:
    return [u for u in session.exec(select(User).order_by(User.id)) if u.has(Role.reviewer)]


def automatic_conflicts(session: Session, call: Call, proposal_ids: list[int],
                        panel: list[User]) -> dict[tuple[int, int], str]:
    """(reviewer, proposal) pairs that must not meet, with the reason."""
    teams: dict[int, set[int]] = defaultdict(set)
    for m in session.exec(select(ProposalMember).join(Proposal).where(Proposal.call_id == call.id,
                                                                      Proposal.state != ProposalState.draft)):
        teams[m.proposal_id].add(m.user_id)
    people = {u.id: u for u in session.exec(select(User).where(User.id.in_(set().union(*teams.values()) or {0})))}
    out: dict[tuple[int, int], str] = {}
    for reviewer in panel:
        mine = {pid for pid, team in teams.items() if reviewer.id in team}
        own = (reviewer.institution or "").strip().casefold()
        for pid in proposal_ids:
            if pid in mine:
                out[(reviewer.id, pid)] = "on the proposal's team"
            elif mine:
                out[(reviewer.id, pid)] = "on the team of a competing proposal in this call"
            elif own and any((people[u].institution or "").strip().casefold() == own for u in teams[pid]):
                out[(reviewer.id, pid)] = "same institution as a team member"
    return out


def proposed(session: Session, call: Call, proposal_ids: list[int] | None = None,
             ) -> tuple[list[tuple[int, int]], dict[int, int], dict[tuple[int, int], float], list[tuple[int, int]]]:
    """The (reviewer, proposal) pairs matching gives now, the shortfalls, the expertise scores it weighed and the
    chair's forced pairs: conflicts and the chair's avoided pairs excluded, loads balanced within the cap."""
    from service.review import expertise

    panel = reviewers(session)
    if proposal_ids is None:
        proposal_ids = list(session.exec(select(Proposal.id).where(
            Proposal.call_id == call.id, Proposal.state.in_((ProposalState.submitted, ProposalState.under_review)))
            .order_by(Proposal.id)))
    forced, avoided = expertise.choices(session, call.id)
    excluded = set(automatic_conflicts(session, call, proposal_ids, panel)) | avoided
    current: dict[int, set[int]] = defaultdict(set)
    load: dict[int, int] = defaultdict(int)
    for a in session.exec(select(ReviewAssignment).where(ReviewAssignment.call_id == call.id)):
        current[a.proposal_id].add(a.reviewer_id)
        if a.state == AssignmentState.conflict:
            excluded.add((a.reviewer_id, a.proposal_id))
        else:
            load[a.reviewer_id] += 1
    proposals = list(session.exec(select(Proposal).where(Proposal.id.in_(proposal_ids or [0]))))
    score = expertise.scores(session, call, proposals, panel)
    pairs, short = matching.plan(proposal_ids, [u.id for u in panel], excluded, current, load,
                                 call.reviewers_per_proposal, call.reviewer_cap, score=score, forced=forced)
    return pairs, short, score, forced


def _fill(session: Session, call: Call, proposal_ids: list[int]) -> tuple[list[ReviewAssignment], dict[int, int]]:
    """Give each proposal its reviewers, up to the call's number, within the cap; e-mail the new ones."""
    panel = reviewers(session)
    pairs, short, _, _ = proposed(session, call, proposal_ids)
    made = [ReviewAssignment(call_id=call.id, proposal_id=p, reviewer_id=r) for r, p in pairs]
    session.add_all(made)
    session.flush()
    by_id = {u.id: u for u in panel}
    titles = {p.id: p.title for p in session.exec(select(Proposal).where(Proposal.id.in_([p for _, p in pairs]
                                                                                         or [0])))}
    for a in made:
        outbox.queue(session, by_id[a.reviewer_id], f"Review: “{titles[a.proposal_id]}”",
                     f"You are asked to review “{titles[a.proposal_id]}” in the call “{call.title}”. Open your "
                     "review queue in the portal to accept it or declare a conflict.", kind="assignment")
    return made, short


def start_review(session: Session, *, actor: User, call_id: int) -> ReviewStart:
    """The chair closes a regular call for review: its submitted proposals go under review and get reviewers."""
    if not actor.has(Role.admin):
        raise Forbidden("only the committee (admins) starts a review")
    call = lock(session, Call, call_id)
    if call is None:
        raise NotFound(f"no call {call_id}")
    if call.kind != CallKind.regular:
        raise Conflict("only regular calls are peer reviewed; the director decides the others")
    if call.review_started_at is not None:
        raise Conflict(f"the review of '{call.title}' started on {call.review_started_at:%Y-%m-%d %H:%M} UTC")
    if utcnow() < call.closes_at:
        raise Conflict(f"the call is open until {call.closes_at:%Y-%m-%d %H:%M} UTC; review starts after the deadline")
    submitted = list(session.exec(select(Proposal).where(Proposal.call_id == call.id,
                                                         Proposal.state == ProposalState.submitted)
                                  .order_by(Proposal.id)))
    for proposal in submitted:
        states.move(session, proposal, ProposalState.under_review, actor=actor, reason="the call's review started")
    call.review_started_at = utcnow()
    session.add(call)
    made, short = _fill(session, call, [p.id for p in submitted])
    record(session, actor, "review.start", f"call:{call.id}", proposals=len(submitted), assignments=len(made),
           shortfalls=short)
    return ReviewStart(proposals=len(submitted), assignments=len(made), shortfalls=short)


def conflict_of(session: Session, a: ReviewAssignment) -> str | None:
    """Why this assignment's reviewer may not review its proposal as the teams stand now, or None."""
    call, reviewer = session.get(Call, a.call_id), session.get(User, a.reviewer_id)
    return automatic_conflicts(session, call, [a.proposal_id], [reviewer]).get((reviewer.id, a.proposal_id))


def recheck(session: Session, *, call_id: int, actor: User | None, why: str) -> list[ReviewAssignment]:
    """After a team of the call changed: withdraw every reviewer who is now conflicted (a review already in stops
    counting), audit it, and hand each proposal to another reviewer. Returns the withdrawn assignments."""
    call = session.get(Call, call_id)
    if call is None or call.decisions_released_at is not None:
        return []
    active = list(session.exec(select(ReviewAssignment).where(ReviewAssignment.call_id == call_id,
                                                              ReviewAssignment.state.in_(ACTIVE))))
    if not active:
        return []
    panel = list({a.reviewer_id: session.get(User, a.reviewer_id) for a in active}.values())
    found = automatic_conflicts(session, call, sorted({a.proposal_id for a in active}), panel)
    withdrawn = [a for a in active if (a.reviewer_id, a.proposal_id) in found]
    for a in withdrawn:
        reason = f"withdrawn: {found[(a.reviewer_id, a.proposal_id)]} ({why})"
        move_assignment(session, a, set(ACTIVE), AssignmentState.conflict, conflict_reason=reason[:1000])
        record(session, actor, "review.conflict_found", f"proposal:{a.proposal_id}", assignment=a.id,
               reviewer=a.reviewer_id, reason=reason)
    under_review = [p for p in {a.proposal_id for a in withdrawn}
                    if session.get(Proposal, p).state == ProposalState.under_review]
    if under_review:
        _fill(session, call, sorted(under_review))
    return withdrawn


def recheck_for_person(session: Session, *, user: User, why: str) -> list[ReviewAssignment]:
    """After a person's institution changed: recheck every call in review where they review or are on a team."""
    as_reviewer = session.exec(select(ReviewAssignment.call_id).where(ReviewAssignment.reviewer_id == user.id,
                                                                      ReviewAssignment.state.in_(ACTIVE))).all()
    as_member = session.exec(select(Proposal.call_id).join(ProposalMember).where(
        ProposalMember.user_id == user.id, Proposal.state == ProposalState.under_review)).all()
    return [a for call_id in sorted({*as_reviewer, *as_member})
            for a in recheck(session, call_id=call_id, actor=user, why=why)]


def refuse_if_conflicted(session: Session, a: ReviewAssignment) -> None:
    reason = conflict_of(session, a)
    if reason:
        raise Conflict(f"you may not review this proposal: you are {reason}; declare the conflict")


def own_assignment(session: Session, actor: User, assignment_id: int, *, for_update: bool = False) -> ReviewAssignment:
    """The reviewer's own assignment; 404 to anyone else (admins read reviews through the committee's views)."""
    a = lock(session, ReviewAssignment, assignment_id) if for_update else session.get(ReviewAssignment, assignment_id)
    if a is None or a.reviewer_id != actor.id or not actor.has(Role.reviewer):
        raise NotFound(f"no review assignment {assignment_id}")
    return a


def queue_of(session: Session, actor: User) -> list[ReviewAssignment]:
    """A reviewer's assignments, newest call first, conflicts included (so the reviewer sees what was declared)."""
    if not actor.has(Role.reviewer):
        raise Forbidden("this is the reviewers' queue; you do not hold the reviewer role")
    return list(session.exec(select(ReviewAssignment).where(ReviewAssignment.reviewer_id == actor.id)
                             .order_by(ReviewAssignment.id.desc())))


def move_assignment(session: Session, a: ReviewAssignment, sources: set[AssignmentState], target: AssignmentState,
          **values: object) -> None:
    changed = session.exec(update(ReviewAssignment).where(ReviewAssignment.id == a.id,
                                                          ReviewAssignment.state.in_(sources))
                           .values(state=target, responded_at=utcnow(), **values)).rowcount
    if changed != 1:
        raise Conflict(f"this assignment is {a.state}; it cannot become {target}")
    session.refresh(a)


def still_open(session: Session, a: ReviewAssignment) -> Call:
    call = session.get(Call, a.call_id)
    if call.decisions_released_at is not None:
        raise Conflict("the call's decisions are released; its reviews are closed")
    proposal = session.get(Proposal, a.proposal_id)
    if proposal.state != ProposalState.under_review:
        raise Conflict(f"the proposal is {proposal.state.replace('_', ' ')}; it needs no review now")
    return call


def accept(session: Session, *, actor: User, assignment_id: int) -> ReviewAssignment:
    a = own_assignment(session, actor, assignment_id, for_update=True)
    still_open(session, a)
    refuse_if_conflicted(session, a)
    move_assignment(session, a, {AssignmentState.invited}, AssignmentState.accepted)
    return a


def declare_conflict(session: Session, *, actor: User, assignment_id: int, reason: str) -> ReviewAssignment | None:
    """The reviewer steps aside; the proposal is given to another reviewer (returned, if one is free)."""
    a = own_assignment(session, actor, assignment_id, for_update=True)
    call = still_open(session, a)
    move_assignment(session, a, {AssignmentState.invited, AssignmentState.accepted}, AssignmentState.conflict,
          conflict_reason=reason.strip()[:1000] or "declared by the reviewer")
    record(session, actor, "review.conflict", f"proposal:{a.proposal_id}", assignment=a.id)
    made, _ = _fill(session, call, [a.proposal_id])
    return made[0] if made else None


def shortfalls(session: Session, call: Call) -> dict[int, int]:
    """Proposals under review with fewer active reviewers than the call asks for."""
    have: dict[int, int] = defaultdict(int)
    for a in session.exec(select(ReviewAssignment).where(ReviewAssignment.call_id == call.id,
                                                         ReviewAssignment.state.in_(ACTIVE))):
        have[a.proposal_id] += 1
    ids = session.exec(select(Proposal.id).where(Proposal.call_id == call.id,
                                                 Proposal.state == ProposalState.under_review)).all()
    return {pid: call.reviewers_per_proposal - have[pid] for pid in ids if have[pid] < call.reviewers_per_proposal}
