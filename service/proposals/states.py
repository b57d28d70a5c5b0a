"""The proposal state machine. Only `move` changes a proposal's state: a conditional UPDATE whose row count is
checked (0: someone else changed it first, a Conflict, never a silent overwrite), plus a ProposalEvent row.

    draft        -> submitted     the PI submits it while its call is open; its text is frozen from then on
    draft        -> withdrawn     the PI gives it up
    submitted    -> under_review  the chair starts the review of its (closed, regular) call
    submitted    -> accepted      the director awards it (Director's Discretionary and supplemental calls)
    submitted    -> declined      the director declines it (Director's Discretionary and supplemental calls)
    submitted    -> withdrawn     the PI withdraws it before a decision
    under_review -> accepted      the chair awards it GPU-hours
    under_review -> declined      the chair declines it, or releases the call's decisions without awarding it
    under_review -> withdrawn     the PI withdraws it before a decision

accepted, declined and withdrawn are final.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session

from service.errors import Conflict
from service.models import Proposal, ProposalEvent, ProposalState, User
from service.timeutil import utcnow

S = ProposalState
TRANSITIONS: dict[ProposalState, frozenset[ProposalState]] = {
    S.draft: frozenset({S.submitted, S.withdrawn}),
    S.submitted: frozenset({S.under_review, S.accepted, S.declined, S.withdrawn}),
    S.under_review: frozenset({S.accepted, S.declined, S.withdrawn}),
    S.accepted: frozenset(),
    S.declined: frozenset(),
    S.withdrawn: frozenset(),
}
DECIDED = frozenset({S.accepted, S.declined})
FINAL = frozenset({S.accepted, S.declined, S.withdrawn})
FROZEN = frozenset(TRANSITIONS) - {S.draft}  # the text may change only while a draft


def move(session: Session, proposal: Proposal, target: ProposalState, *, actor: User | None,
         reason: str = "") -> Proposal:
    """Move the proposal from the state it was read in to `target`, or raise Conflict."""
    current = ProposalState(proposal.state)
    if target not in TRANSITIONS[current]:
        raise Conflict(f"proposal {proposal.id} is {current.replace('_', ' ')}; it cannot become "
                       f"{target.replace('_', ' ')}")
    session.flush()
    now = utcnow()
    values: dict = {"state": target, "updated_at": now}
    if target == S.submitted:
        values["submitted_at"] = now
    changed = session.exec(update(Proposal).where(Proposal.id == proposal.id, Proposal.state == current)
                           .values(**values)).rowcount
    if changed != 1:
        raise Conflict(f"proposal {proposal.id} changed meanwhile; reload and try again")
    session.add(ProposalEvent(proposal_id=proposal.id, actor_id=actor.id if actor else None, from_state=current,
                              to_state=target, reason=reason[:2000]))
    session.flush()
    session.refresh(proposal)
    return proposal
