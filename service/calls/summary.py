"""A cycle's report, public: per call what was offered, awarded and used (GPU-hours charged on the ledger), what it
made (the archive's data products, and how many are public now), and what came of it (outcomes the teams record)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, select

from service.allocations.pacing import returned_s
from service.calls.service import awarded_gpu_hours
from service.errors import NotFound
from service.models import ArchiveProduct, Award, Call, Cycle, LedgerEntry, Outcome, Proposal, Run, RunState
from service.proposals.outcomes import OutcomePublic, to_public
from service.timeutil import utcnow


class CallFigures(BaseModel):
    call_id: int
    title: str
    capacity_gpu_hours: float
    awarded_gpu_hours: float
    used_gpu_hours: float  # charged to its awards' runs, less refunds
    awards: int
    runs_succeeded: int
    products: int
    products_public: int  # whose files anyone may download now


class OutcomeListed(OutcomePublic):
    proposal_title: str


class CycleSummary(BaseModel):
    id: int
    name: str
    capacity_gpu_hours: float
    awarded_gpu_hours: float
    used_gpu_hours: float
    returned_gpu_hours: float  # what its awards left unused at the end of their periods, back in its pool
    products: int
    products_public: int
    calls: list[CallFigures]
    outcomes: list[OutcomeListed]
    as_of: datetime


def _used_hours(session: Session, call_id: int) -> float:
    charged = session.exec(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                           .join(Run, Run.id == LedgerEntry.run_id).join(Proposal, Proposal.id == Run.proposal_id)
                           .where(Proposal.call_id == call_id, LedgerEntry.run_id.is_not(None))).one()
    return round(-float(charged) / 3600, 4)


def _count(session: Session, *where) -> int:  # noqa: ANN002
    return int(session.exec(select(func.count()).select_from(ArchiveProduct).where(*where)).one())


def summary(session: Session, cycle_id: int) -> CycleSummary:
    cycle = session.get(Cycle, cycle_id)
    if cycle is None:
        raise NotFound(f"no cycle {cycle_id}")
    now = utcnow()
    rows = []
    for call in session.exec(select(Call).where(Call.cycle_id == cycle_id).order_by(Call.opens_at)).all():
        rows.append(CallFigures(
            call_id=call.id, title=call.title, capacity_gpu_hours=call.capacity_gpu_hours,
            awarded_gpu_hours=awarded_gpu_hours(session, call.id), used_gpu_hours=_used_hours(session, call.id),
            awards=int(session.exec(select(func.count()).select_from(Award).join(
                Proposal, Proposal.id == Award.proposal_id).where(Proposal.call_id == call.id)).one()),
            runs_succeeded=int(session.exec(select(func.count()).select_from(Run).join(
                Proposal, Proposal.id == Run.proposal_id).where(Proposal.call_id == call.id,
                                                                 Run.state == RunState.succeeded)).one()),
            products=_count(session, ArchiveProduct.call_id == call.id),
            products_public=_count(session, ArchiveProduct.call_id == call.id, ArchiveProduct.public_from <= now)))
    outcomes = session.exec(select(Outcome, Proposal.title).join(Proposal, Proposal.id == Outcome.proposal_id)
                            .join(Call, Call.id == Proposal.call_id).where(Call.cycle_id == cycle_id)
                            .order_by(Outcome.created_at)).all()
    return CycleSummary(
        id=cycle.id, name=cycle.name, capacity_gpu_hours=cycle.capacity_gpu_hours,
        awarded_gpu_hours=round(sum(r.awarded_gpu_hours for r in rows), 4),
        used_gpu_hours=round(sum(r.used_gpu_hours for r in rows), 4),
        returned_gpu_hours=round(returned_s(session, cycle.id) / 3600, 4),
        products=sum(r.products for r in rows), products_public=sum(r.products_public for r in rows), calls=rows,
        outcomes=[OutcomeListed(**to_public(o).model_dump(), proposal_title=title) for o, title in outcomes],
        as_of=now)
