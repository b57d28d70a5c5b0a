"""Decisions: the committee (admins) awards a proposal GPU-hours, or declines it.

Regular calls are decided after their review started, against the panel's ranking: awarding a proposal below the
triage line, or declining one above it, needs a reason, which is recorded. Director's Discretionary and
supplemental proposals are decided by the director once submitted. Director's Discretionary awards come from the
cycle's reserve; a supplement's GPU-hours are credited to the award it tops up and start no run.

An award opens its ledger account, credited with the GPU-hours, and queues the proposal's run in the same
transaction; the scheduler picks it up from the database. The call's row (and, for the reserve, the cycle's) is
locked before the remaining capacity is read, and the proposal's before its state is, so concurrent awards are
serialised: no capacity is ever exceeded and a proposal is decided once.
"""

from __future__ import annotations

from sqlmodel import Session

from service.audit.service import record
from service.calls.service import director_awarded, director_pool, donor_awarded_gpu_hours, left_to_award
from service.db import lock
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.ledger.service import account_id_for_award, cycle_returned_s, open_award_account, post
from service.models import (
    Award,
    Call,
    CallKind,
    Cycle,
    EntryKind,
    PriorityClass,
    Proposal,
    ProposalState,
    Role,
    Run,
    User,
)
from service.proposals import states
from service.review.committee import against_ranking, tell_decision
from service.runs.service import create_run
from service.timeutil import add_months, utcnow
from service.types import gpu_hours as valid_gpu_hours


def _decidable(session: Session, actor: User, proposal_id: int) -> tuple[Proposal, Call]:
    if not actor.has(Role.admin):
        raise Forbidden("only the committee (admins) decides proposals")
    proposal = session.get(Proposal, proposal_id)
    if proposal is None or proposal.state == ProposalState.draft:
        raise NotFound(f"no submitted proposal {proposal_id}")
    call = lock(session, Call, proposal.call_id)
    proposal = lock(session, Proposal, proposal_id)
    if proposal.state in states.FINAL:
        raise Conflict(f"proposal {proposal_id} is already {proposal.state}")
    if call.kind == CallKind.regular and proposal.state != ProposalState.under_review:
        raise Conflict(f"proposal {proposal_id} is not under review yet: start the review of its call first")
    return proposal, call


def _reason(session: Session, call: Call, proposal_id: int, reason: str, *, awarding: bool) -> str:
    why = against_ranking(session, call, proposal_id, awarding=awarding)
    if why and not reason.strip():
        raise Invalid(f"reason: {why}; deciding against the ranking needs a reason, which is recorded")
    return why or ""


def award_proposal(session: Session, *, actor: User, proposal_id: int, gpu_hours: float, gpus_per_run: int = 1,
                   priority: PriorityClass = PriorityClass.B, reason: str = "",
                   donor: bool = False) -> tuple[Award, Run | None]:
    """Award a proposal; a `donor` award (service.volunteers.donors) draws on the call's reserved donor share,
    every other on the rest of its capacity."""
    gpu_hours = valid_gpu_hours(gpu_hours)
    proposal, call = _decidable(session, actor, proposal_id)
    override = _reason(session, call, proposal_id, reason, awarding=True)
    if gpu_hours > proposal.requested_gpu_hours + 1e-9:
        raise Invalid(f"award of {gpu_hours:g} GPU-hours exceeds the {proposal.requested_gpu_hours:g} requested")
    reserved = call.capacity_gpu_hours * call.donor_share
    if donor:
        remaining = reserved - donor_awarded_gpu_hours(session, call.id)
        if gpu_hours > remaining + 1e-9:
            raise Conflict(f"the call's donor share has {max(remaining, 0):g} GPU-hours left, not {gpu_hours:g}")
    remaining = left_to_award(session, call)
    if not donor and gpu_hours > remaining + 1e-9:
        share = f" (its donor share of {reserved:g} set apart)" if reserved else ""
        raise Conflict(f"the call has {max(remaining, 0):g} GPU-hours left to award{share}, not {gpu_hours:g}")
    if call.kind == CallKind.director:
        cycle = lock(session, Cycle, call.cycle_id)
        returned = cycle_returned_s(session, cycle.id) / 3600  # what ended awards left unused comes back here
        reserve_left = director_pool(session, cycle) - director_awarded(session, cycle.id)
        if gpu_hours > reserve_left + 1e-9:
            raise Conflict(f"the Director's reserve of cycle '{cycle.name}' has {max(reserve_left, 0):g} GPU-hours "
                           f"left{f' ({returned:g} of them returned unused)' if returned else ''}, not {gpu_hours:g}")
    now = utcnow()
    award = Award(proposal_id=proposal_id, gpu_hours=gpu_hours, priority=priority, awarded_by=actor.id,
                  awarded_at=now, exclusive_until=add_months(now, call.exclusive_months),
                  tops_up_award_id=proposal.parent_award_id if call.kind == CallKind.supplemental else None)
    session.add(award)
    session.flush()
    states.move(session, proposal, ProposalState.accepted, actor=actor, reason=reason or "awarded")
    run = None
    if award.tops_up_award_id is not None:
        post(session, account_id=account_id_for_award(session, award.tops_up_award_id), kind=EntryKind.credit,
             amount=round(gpu_hours * 3600), key=f"supplement:award-{award.id}",
             note=f"supplement of {gpu_hours:g} GPU-hours (proposal {proposal_id})")
    else:
        open_award_account(session, award)
        run = create_run(session, award=award, proposal=proposal, gpus=max(gpus_per_run, 1))
    record(session, actor, "award", f"proposal:{proposal_id}", gpu_hours=gpu_hours, priority=str(priority),
           call=call.id, against_ranking=override, reason=reason.strip(), donor_share=donor)
    if call.kind != CallKind.regular:
        tell_decision(session, proposal, call)
    return award, run


def decline_proposal(session: Session, *, actor: User, proposal_id: int, reason: str = "") -> Proposal:
    proposal, call = _decidable(session, actor, proposal_id)
    override = _reason(session, call, proposal_id, reason, awarding=False)
    states.move(session, proposal, ProposalState.declined, actor=actor, reason=reason or "declined")
    record(session, actor, "decline", f"proposal:{proposal_id}", call=call.id, against_ranking=override,
           reason=reason.strip())
    if call.kind != CallKind.regular:
        tell_decision(session, proposal, call)
    return proposal
