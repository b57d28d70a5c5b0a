"""Who may do what with a proposal: the one place the API, the pages and the downloads ask.

    read     its team (PI and co-investigators) in any state; admins (the committee) once it is submitted
    write    its PI: edit and submit a draft, withdraw, invite, remove members, hand on the PI role
    decide   admins: start the review, award, decline
    rate     its PI, once the call's decisions are released: rate the helpfulness of each review

Reviewers never read a proposal through here: they get a review packet (`service.review.packets`) for the
proposals assigned to them, which carries no team in a dual-anonymous call.
Someone who may not read a proposal gets a 404 (its existence is not confirmed); someone who may read it but not
act gets a 403 that says why.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import or_
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, select

from service.db import lock
from service.errors import Forbidden, NotFound
from service.models import MemberRole, Proposal, ProposalMember, ProposalState, Role, User


class Act(StrEnum):
    read = "read"
    write = "write"
    decide = "decide"
    rate = "rate"


REFUSALS = {Act.write: "only the proposal's PI may do that", Act.decide: "only the committee (admins) decides",
            Act.rate: "only the PI rates the reviews, once the decisions are released"}


def is_member(session: Session, user: User | None, proposal_id: int) -> bool:
    return user is not None and session.get(ProposalMember, (proposal_id, user.id)) is not None


def can(session: Session, actor: User | None, act: Act, proposal: Proposal, *, released: bool = False) -> bool:
    if actor is None:
        return False
    member = session.get(ProposalMember, (proposal.id, actor.id))
    committee = actor.has(Role.admin) and proposal.state != ProposalState.draft
    if act == Act.read:
        return member is not None or committee
    if act == Act.write:
        return member is not None and member.role == MemberRole.pi
    if act == Act.decide:
        return committee
    return member is not None and member.role == MemberRole.pi and released


def readable(actor: User) -> ColumnElement[bool]:
    """A filter on Proposal for what `actor` may read."""
    mine = Proposal.id.in_(select(ProposalMember.proposal_id).where(ProposalMember.user_id == actor.id))
    if actor.has(Role.admin):
        return or_(mine, Proposal.state != ProposalState.draft)
    return mine


def get(session: Session, actor: User, proposal_id: int, act: Act = Act.read, *, for_update: bool = False,
        released: bool = False) -> Proposal:
    """The proposal, if `actor` may `act` on it: 404 when they may not even read it, 403 when they may read it."""
    proposal = lock(session, Proposal, proposal_id) if for_update else session.get(Proposal, proposal_id)
    if proposal is None or not can(session, actor, Act.read, proposal):
        raise NotFound(f"no proposal {proposal_id}")
    if act != Act.read and not can(session, actor, act, proposal, released=released):
        raise Forbidden(REFUSALS[act])
    return proposal
