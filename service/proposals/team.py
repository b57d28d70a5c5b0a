"""A proposal's team: the PI invites co-investigators by single-use links, removes members, hands on the PI role.

No one joins a team without consenting: an invite is a link sent to the invitee, who signs in and accepts it. The
link works once (a conditional UPDATE marks it used), for `invite_days`, until the PI withdraws it.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, select

from service.audit.service import record
from service.auth.service import token_hash
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.mail import outbox
from service.models import MemberRole, Proposal, ProposalInvite, ProposalMember, ProposalState, Role, User
from service.proposals import access
from service.proposals.access import Act
from service.review.assignments import recheck
from service.timeutil import utcnow
from service.types import Email, parse

INVITE_PREFIX = "inv_"
CLOSED = frozenset({ProposalState.declined, ProposalState.withdrawn})  # an accepted team may still grow
INVALID_LINK = "this invite link is not valid: it was used, withdrawn or has expired; ask the PI for a new one"


def invite(session: Session, *, actor: User, proposal_id: int, email: str, base_url: str,
           days: int = 14) -> tuple[ProposalInvite, str]:
    """Make a single-use invite and e-mail its link; returns the invite and the link (shown to the PI once)."""
    email = parse(Email, email, "email").lower()
    proposal = access.get(session, actor, proposal_id, Act.write, for_update=True)
    if proposal.state in CLOSED:
        raise Conflict(f"proposal {proposal_id} is {proposal.state}; its team no longer changes")
    raw = INVITE_PREFIX + secrets.token_urlsafe(24)
    now = utcnow()
    row = ProposalInvite(proposal_id=proposal_id, token_hash=token_hash(raw), email=email, created_by=actor.id,
                         created_at=now, expires_at=now + timedelta(days=days))
    session.add(row)
    session.flush()
    record(session, actor, "team.invite", f"proposal:{proposal_id}", invite=row.id, address=email)
    link = f"{base_url.rstrip('/')}/invites/{raw}"
    outbox.queue(session, email, f"Invitation to join the proposal “{proposal.title}”",
                 f"{actor.name} invites you to join the proposal “{proposal.title}” as a co-investigator at the "
                 f"Commons Observatory. Open this link, sign in, and accept (it works once, until "
                 f"{row.expires_at:%Y-%m-%d}):\n\n{link}\n\nIf you did not expect this, ignore it.")
    return row, link


def pending_invite(session: Session, raw: str) -> tuple[ProposalInvite, Proposal]:
    """The invite a link names, while it can still be accepted."""
    row = session.exec(select(ProposalInvite).where(ProposalInvite.token_hash == token_hash(raw))).first() \
        if raw.startswith(INVITE_PREFIX) and len(raw) < 100 else None
    if row is None or row.used_at or row.revoked_at or row.expires_at <= utcnow():
        raise NotFound(INVALID_LINK)
    return row, session.get(Proposal, row.proposal_id)


def accept(session: Session, *, actor: User, raw: str) -> Proposal:
    """The invitee joins the team as co-investigator; the link is spent."""
    row, proposal = pending_invite(session, raw)
    if not actor.has(Role.researcher):
        raise Forbidden("co-investigators are researchers; add the researcher role to your account first")
    if access.is_member(session, actor, proposal.id):
        raise Conflict("you are already on this proposal's team")
    if proposal.state in CLOSED:
        raise Conflict(f"the proposal is {proposal.state}; its team no longer changes")
    spent = session.exec(update(ProposalInvite).where(ProposalInvite.id == row.id, ProposalInvite.used_at.is_(None),
                                                      ProposalInvite.revoked_at.is_(None))
                         .values(used_at=utcnow(), used_by=actor.id)).rowcount
    if spent != 1:
        raise NotFound(INVALID_LINK)
    session.add(ProposalMember(proposal_id=proposal.id, user_id=actor.id, role=MemberRole.coi))
    session.flush()
    record(session, actor, "team.join", f"proposal:{proposal.id}", invite=row.id, invited_address=row.email)
    _team_changed(session, actor, proposal, f"{actor.name} joined the team of proposal {proposal.id}")
    return proposal


def _team_changed(session: Session, actor: User, proposal: Proposal, why: str) -> None:
    """A team of a call under review changed: reviewers it now conflicts with are withdrawn and replaced."""
    recheck(session, call_id=proposal.call_id, actor=actor, why=why)


def invites(session: Session, *, actor: User, proposal_id: int) -> list[ProposalInvite]:
    access.get(session, actor, proposal_id, Act.write)
    return list(session.exec(select(ProposalInvite).where(ProposalInvite.proposal_id == proposal_id)
                             .order_by(ProposalInvite.id.desc())))


def revoke_invite(session: Session, *, actor: User, proposal_id: int, invite_id: int) -> None:
    access.get(session, actor, proposal_id, Act.write)
    row = session.get(ProposalInvite, invite_id)
    if row is None or row.proposal_id != proposal_id:
        raise NotFound(f"no invite {invite_id} on proposal {proposal_id}")
    if row.used_at:
        raise Conflict("that invite was already accepted; remove the member instead")
    row.revoked_at = row.revoked_at or utcnow()
    session.add(row)
    session.flush()
    record(session, actor, "team.revoke_invite", f"proposal:{proposal_id}", invite=invite_id)


def remove_member(session: Session, *, actor: User, proposal_id: int, user_id: int) -> None:
    """The PI removes a co-investigator, or a co-investigator leaves. The PI hands the role on before leaving."""
    proposal = access.get(session, actor, proposal_id, for_update=True)
    if actor.id != user_id and not access.can(session, actor, Act.write, proposal):
        raise Forbidden(access.REFUSALS[Act.write])
    member = session.get(ProposalMember, (proposal_id, user_id))
    if member is None:
        raise NotFound(f"user {user_id} is not on this proposal's team")
    if member.role == MemberRole.pi:
        raise Conflict("the PI cannot be removed; hand the PI role to a co-investigator first")
    session.delete(member)
    session.flush()
    record(session, actor, "team.remove", f"proposal:{proposal_id}", user_id=user_id)


def transfer_pi(session: Session, *, actor: User, proposal_id: int, user_id: int) -> Proposal:
    """The PI hands the role to a co-investigator, and stays on the team as one."""
    proposal = access.get(session, actor, proposal_id, Act.write, for_update=True)
    new = session.get(ProposalMember, (proposal_id, user_id))
    if new is None or new.role != MemberRole.coi:
        raise Invalid(f"user_id: user {user_id} is not a co-investigator of this proposal")
    old = session.get(ProposalMember, (proposal_id, actor.id))
    old.role, new.role, proposal.pi_id = MemberRole.coi, MemberRole.pi, user_id
    session.add_all([old, new, proposal])
    session.flush()
    record(session, actor, "team.transfer_pi", f"proposal:{proposal_id}", from_user=actor.id, to_user=user_id)
    return proposal
