"""Calls for proposals: opened by an admin, with a window and a capacity in GPU-hours."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, select

from service.calls.schemas import CallCreate, CallPublic
from service.errors import Invalid, NotFound
from service.models import Award, Call, Proposal, User
from service.timeutil import to_utc, utcnow


def create_call(session: Session, *, actor: User, data: CallCreate) -> Call:
    opens_at, closes_at = to_utc(data.opens_at), to_utc(data.closes_at)
    if closes_at <= opens_at:
        raise Invalid("closes_at must be after opens_at")
    call = Call(title=data.title.strip(), description=data.description, opens_at=opens_at, closes_at=closes_at,
                capacity_gpu_hours=data.capacity_gpu_hours, exclusive_months=data.exclusive_months,
                created_by=actor.id)
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
