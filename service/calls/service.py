"""Cycles and calls for proposals: opened by an admin, with a window and a capacity in GPU-hours.

A cycle's capacity is shared by its calls: regular and supplemental calls together get at most the capacity less
the Director's reserve (at most 10% of the capacity), and the awards of its Director's Discretionary calls
together never exceed that reserve. The cycle's row is locked while either is checked.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, select

from service.calls.schemas import CallCreate, CallPublic, CycleCreate, CyclePublic
from service.db import lock
from service.errors import Conflict, Invalid, NotFound
from service.ledger.service import cycle_returned_s
from service.models import DIRECTOR_RESERVE_LIMIT, Award, Call, CallKind, Cycle, DonorShare, Proposal, User
from service.timeutil import to_utc, utcnow


def create_cycle(session: Session, *, actor: User, data: CycleCreate) -> Cycle:
    limit = DIRECTOR_RESERVE_LIMIT * data.capacity_gpu_hours
    if data.director_reserve_gpu_hours > limit + 1e-9:
        raise Invalid(f"director_reserve_gpu_hours: at most {DIRECTOR_RESERVE_LIMIT:.0%} of the capacity "
                      f"({limit:g} GPU-hours)")
    cycle = Cycle(name=data.name.strip(), capacity_gpu_hours=data.capacity_gpu_hours,
                  director_reserve_gpu_hours=data.director_reserve_gpu_hours, created_by=actor.id)
    session.add(cycle)
    session.flush()
    return cycle


def get_cycle(session: Session, cycle_id: int) -> Cycle:
    cycle = session.get(Cycle, cycle_id)
    if cycle is None:
        raise NotFound(f"no cycle {cycle_id}")
    return cycle


def list_cycles(session: Session) -> list[Cycle]:
    return list(session.exec(select(Cycle).order_by(Cycle.id.desc())))


def _calls_capacity(session: Session, cycle_id: int) -> float:
    return float(session.exec(select(func.coalesce(func.sum(Call.capacity_gpu_hours), 0.0)).where(
        Call.cycle_id == cycle_id, Call.kind != CallKind.director)).one())


def director_pool(session: Session, cycle: Cycle) -> float:
    """The GPU-hours the director may award in the cycle: its reserve, and what its ended awards returned unused."""
    return cycle.director_reserve_gpu_hours + cycle_returned_s(session, cycle.id) / 3600


def director_awarded(session: Session, cycle_id: int) -> float:
    """GPU-hours awarded from the cycle's Director's reserve."""
    return float(session.exec(select(func.coalesce(func.sum(Award.gpu_hours), 0.0))
                              .join(Proposal, Proposal.id == Award.proposal_id)
                              .join(Call, Call.id == Proposal.call_id)
                              .where(Call.cycle_id == cycle_id, Call.kind == CallKind.director)).one())


def cycle_public(session: Session, cycle: Cycle) -> CyclePublic:
    return CyclePublic(**cycle.model_dump(include={"id", "name", "capacity_gpu_hours", "director_reserve_gpu_hours"}),
                       director_awarded_gpu_hours=director_awarded(session, cycle.id),
                       calls_capacity_gpu_hours=_calls_capacity(session, cycle.id))


def create_call(session: Session, *, actor: User, data: CallCreate) -> Call:
    opens_at, closes_at = to_utc(data.opens_at), to_utc(data.closes_at)
    if closes_at <= opens_at:
        raise Invalid("closes_at must be after opens_at")
    if data.cycle_id is None:
        if data.kind == CallKind.director:
            raise Invalid("cycle_id: Director's Discretionary time comes from a cycle's reserve; name the cycle")
        cycle = create_cycle(session, actor=actor, data=CycleCreate(name=data.title,
                                                                    capacity_gpu_hours=data.capacity_gpu_hours))
    else:
        cycle = lock(session, Cycle, data.cycle_id)
        if cycle is None:
            raise Invalid(f"cycle_id: no cycle {data.cycle_id}")
    if data.kind == CallKind.director:
        if data.capacity_gpu_hours > director_pool(session, cycle) + 1e-9:
            raise Invalid(f"capacity_gpu_hours: a Director's Discretionary call draws on the cycle's reserve of "
                          f"{director_pool(session, cycle):g} GPU-hours (with what ended awards returned unused)")
    else:
        left = cycle.capacity_gpu_hours - cycle.director_reserve_gpu_hours - _calls_capacity(session, cycle.id)
        if data.capacity_gpu_hours > left + 1e-9:
            raise Conflict(f"capacity_gpu_hours: the cycle '{cycle.name}' has {max(left, 0):g} GPU-hours left for "
                           "calls (its capacity less the Director's reserve and its other calls)")
    call = Call(**data.model_dump(exclude={"cycle_id", "title", "opens_at", "closes_at"}), cycle_id=cycle.id,
                title=data.title.strip(), opens_at=opens_at, closes_at=closes_at, created_by=actor.id)
    session.add(call)
    session.flush()
    return call


def get_call(session: Session, call_id: int) -> Call:
    call = session.get(Call, call_id)
    if call is None:
        raise NotFound(f"no call {call_id}")
    return call


def is_open(call: Call, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return call.opens_at <= now < call.closes_at


def donor_awarded_gpu_hours(session: Session, call_id: int) -> float:
    """GPU-hours of the call's reserved donor share already awarded."""
    return float(session.exec(select(func.coalesce(func.sum(DonorShare.gpu_hours), 0.0))
                              .where(DonorShare.call_id == call_id)).one())


def left_to_award(session: Session, call: Call) -> float:
    """GPU-hours the committee may still award as it decides (the call's donor share set apart)."""
    donated = donor_awarded_gpu_hours(session, call.id)
    return call.capacity_gpu_hours * (1 - call.donor_share) - (awarded_gpu_hours(session, call.id) - donated)


def awarded_gpu_hours(session: Session, call_id: int) -> float:
    total = session.exec(
        select(func.coalesce(func.sum(Award.gpu_hours), 0.0))
        .join(Proposal, Proposal.id == Award.proposal_id)
        .where(Proposal.call_id == call_id)
    ).one()
    return float(total)


def list_calls(session: Session) -> list[Call]:
    return list(session.exec(select(Call).order_by(Call.closes_at.desc())))


def to_public(session: Session, call: Call) -> CallPublic:
    return CallPublic(**call.model_dump(exclude={"created_by", "created_at"}), is_open=is_open(call),
                      awarded_gpu_hours=awarded_gpu_hours(session, call.id))
