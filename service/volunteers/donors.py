"""Donor shares: volunteers' credit turned into telescope time.

A call may reserve a share of its capacity for contributors (`Call.donor_share`). An owner who is also a researcher
and whose volunteers' machines earned credit may claim a donor share for a proposal they lead in that call. Once
the call's review has started, the committee awards the reserved share among the claims in proportion to each
claimant's unspent credit, through the same awards and ledger as any other: no claim gets more than it requested
or more GPU-hours than its claimant's credit holds (the rest goes round the others), and the hours awarded are spent
from that credit, once.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from service.allocations.service import award_proposal
from service.audit.service import record
from service.calls.service import donor_awarded_gpu_hours
from service.db import lock
from service.errors import Conflict, Forbidden, NotFound
from service.models import Call, CallKind, DonorShare, Machine, Proposal, ProposalState, Role, User, VolunteerCredit
from service.proposals import states
from service.volunteers import credit
from service.volunteers.credit import DonorSharePublic, VolunteerStandings

MIN_SHARE_H = 0.01  # a share smaller than this is not awarded


def unspent_credit_s(session: Session, owner_id: int) -> float:
    """The owner's credit (GPU-seconds × factor) not yet spent on donor shares."""
    earned = session.exec(select(func.coalesce(func.sum(VolunteerCredit.credit), 0.0))
                          .where(VolunteerCredit.owner_id == owner_id)).one()
    spent = session.exec(select(func.coalesce(func.sum(DonorShare.credit_spent), 0.0))
                         .where(DonorShare.owner_id == owner_id)).one()
    return max(0.0, float(earned) - float(spent))


def claim(session: Session, actor: User, proposal_id: int, *, claimed: bool = True) -> Proposal:
    """The proposal's PI claims (or withdraws the claim to) a donor share of its call."""
    proposal = session.get(Proposal, proposal_id)
    if proposal is None or proposal.pi_id != actor.id:
        raise NotFound(f"no proposal {proposal_id} that you lead")
    call = session.get(Call, proposal.call_id)
    if claimed:
        if not call.donor_share:
            raise Conflict(f"the call '{call.title}' reserves no donor share")
        if not (actor.has(Role.owner) and actor.has(Role.researcher)):
            raise Forbidden("a donor share is for owners who lend machines and are researchers")
        if unspent_credit_s(session, actor.id) <= 0:
            raise Conflict("your volunteers' machines have no unspent credit yet: a donor share is awarded in "
                           "proportion to it")
    if proposal.state in states.FINAL:
        raise Conflict(f"proposal {proposal_id} is already {proposal.state}")
    proposal.donor_claim = claimed
    session.add(proposal)
    record(session, actor, "donor-claim" if claimed else "donor-claim-withdrawn", f"proposal:{proposal_id}")
    return proposal


def divide(pool_h: float, claims: dict[int, tuple[float, float]]) -> dict[int, float]:
    """Split `pool_h` among claims (id -> (credit hours, cap hours)) in proportion to credit, none past its cap;
    what a capped claim leaves goes round the others."""
    shares = dict.fromkeys(claims, 0.0)
    open_ = {key for key, (credit, cap) in claims.items() if credit > 0 and cap > 0}
    left = pool_h
    while open_ and left > 1e-9:
        weight = sum(claims[key][0] for key in open_)
        given = 0.0
        for key in sorted(open_):
            wanted = left * claims[key][0] / weight
            room = claims[key][1] - shares[key]
            take = min(wanted, room)
            shares[key] += take
            given += take
            if take >= room - 1e-12:
                open_.discard(key)
        left -= given
        if given <= 1e-12:
            break
    return shares


def award_shares(session: Session, actor: User, call_id: int, *, gpus_per_run: int = 1) -> list[DonorShare]:
    """Award the call's reserved donor share among its claims; returns the shares awarded now."""
    if not actor.has(Role.admin):
        raise Forbidden("only the committee (admins) awards donor shares")
    call = lock(session, Call, call_id)
    if call is None:
        raise NotFound(f"no call {call_id}")
    if not call.donor_share:
        raise Conflict(f"the call '{call.title}' reserves no donor share")
    pool_h = call.capacity_gpu_hours * call.donor_share - donor_awarded_gpu_hours(session, call.id)
    # Claims the committee may decide now: under review in a regular call, submitted in the others.
    ready = [ProposalState.under_review] if call.kind == CallKind.regular else [ProposalState.submitted,
                                                                               ProposalState.under_review]
    proposals = session.exec(select(Proposal).where(Proposal.call_id == call.id, Proposal.donor_claim,
                                                    Proposal.state.in_(ready)).order_by(Proposal.id)).all()
    credit_h = {p.id: unspent_credit_s(session, p.pi_id) / 3600 for p in proposals}
    shares = divide(pool_h, {p.id: (credit_h[p.id], min(p.requested_gpu_hours, credit_h[p.id])) for p in proposals})
    awarded = []
    for proposal in proposals:
        hours = int(shares[proposal.id] / MIN_SHARE_H + 1e-6) * MIN_SHARE_H  # down to the hundredth
        if hours < MIN_SHARE_H:
            continue
        award, _ = award_proposal(session, actor=actor, proposal_id=proposal.id, gpu_hours=round(hours, 2),
                                  gpus_per_run=gpus_per_run,
                                  reason=f"a donor share: {credit_h[proposal.id]:.2f} hours of its PI's volunteers' "
                                         "credit", donor=True)
        share = DonorShare(call_id=call.id, proposal_id=proposal.id, owner_id=proposal.pi_id, award_id=award.id,
                           gpu_hours=award.gpu_hours, credit_spent=award.gpu_hours * 3600)
        session.add(share)
        session.flush()
        awarded.append(share)
    record(session, actor, "donor-shares", f"call:{call.id}", awarded=[s.proposal_id for s in awarded],
           gpu_hours=round(sum(s.gpu_hours for s in awarded), 2))
    return awarded


def public_shares(session: Session, limit: int = 100) -> list[DonorSharePublic]:
    """Donor shares awarded, newest first; an owner is named only where they chose it on one of their machines."""
    shares = session.exec(select(DonorShare).order_by(DonorShare.id.desc()).limit(limit)).all()
    named = set(session.exec(select(Machine.owner_id).where(Machine.show_owner)).all())
    names = {u.id: u.name for u in session.exec(select(User).where(User.id.in_(named)))} if named else {}
    calls = {c.id: c.title for c in session.exec(select(Call).where(Call.id.in_({s.call_id for s in shares})))}
    return [DonorSharePublic(call_id=s.call_id, call=calls.get(s.call_id, ""), gpu_hours=s.gpu_hours,
                             owner=names.get(s.owner_id)) for s in shares]


def public_standings(session: Session) -> VolunteerStandings:
    """The volunteers' public page: credit by owner and team, and the donor shares it bought."""
    return credit.standings(session).model_copy(update={"donor_shares": public_shares(session)})
