"""Awards: an admin grants a submitted proposal GPU-hours within the call's capacity (the committee's stand-in).

An award opens its ledger account, credited with the GPU-hours, and queues the proposal's run in the same
transaction; the scheduler picks it up from the database.
The call's row is locked before its remaining capacity is read, and the proposal's before its state is, so
concurrent awards are serialised: the capacity is never exceeded and a proposal is awarded once.
"""

from __future__ import annotations

from sqlmodel import Session, select

from service.calls.service import awarded_gpu_hours
from service.db import lock
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.ledger.service import open_award_account
from service.models import Award, Call, PriorityClass, Proposal, ProposalState, Role, Run, User
from service.runs.service import create_run
from service.timeutil import add_months, utcnow
from service.types import gpu_hours as valid_gpu_hours


def award_proposal(session: Session, *, actor: User, proposal_id: int, gpu_hours: float,
                   gpus_per_run: int = 1, priority: PriorityClass = PriorityClass.B) -> tuple[Award, Run]:
    if not actor.has(Role.admin):
        raise Forbidden("only an admin awards GPU-hours")
    gpu_hours = valid_gpu_hours(gpu_hours)
    proposal = session.get(Proposal, proposal_id)
    if proposal is None:
        raise NotFound(f"no submitted proposal {proposal_id}")
    call = lock(session, Call, proposal.call_id)
    proposal = lock(session, Proposal, proposal_id)
    if proposal.state == ProposalState.draft:
        raise NotFound(f"no submitted proposal {proposal_id}")
    if proposal.state == ProposalState.awarded or session.exec(
        select(Award).where(Award.proposal_id == proposal_id)
    ).first():
        raise Conflict(f"proposal {proposal_id} already has an award")
    if gpu_hours > proposal.requested_gpu_hours:
        raise Invalid(f"award of {gpu_hours:g} GPU-hours exceeds the {proposal.requested_gpu_hours:g} requested")
    remaining = call.capacity_gpu_hours - awarded_gpu_hours(session, call.id)
    if gpu_hours > remaining + 1e-9:
        raise Conflict(f"the call has {remaining:g} GPU-hours left to award, not {gpu_hours:g}")
    now = utcnow()
    award = Award(proposal_id=proposal_id, gpu_hours=gpu_hours, priority=priority, awarded_by=actor.id,
                  awarded_at=now,
                  exclusive_until=add_months(now, call.exclusive_months))
    session.add(award)
    proposal.state = ProposalState.awarded
    session.add(proposal)
    session.flush()
    open_award_account(session, award)
    run = create_run(session, award=award, proposal=proposal, gpus=max(gpus_per_run, 1))
    return award, run
