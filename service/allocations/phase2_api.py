"""Phase II in the JSON API: an award's standing, further runs and sweeps queued on it by its team, and change
requests the committee decides."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlmodel import Session, select

from service.allocations import pacing, phase2
from service.deps import AdminUser, CurrentUser, SessionDep
from service.ledger.service import award_balance, award_used
from service.models import Award, Call, ChangeRequest, Proposal, Run
from service.runs.families import get_visible
from service.runs.schemas import RunPublic
from service.runs.service import describe
from service.types import IdPath, text

router = APIRouter(tags=["awards"])


class Sweep(BaseModel):
    field: str = Field(max_length=60, description="A field of the plan, e.g. seed or learning_rate.")
    values: list[Any] = Field(min_length=2, max_length=phase2.SWEEP_MAX, description="One run for each value.")


class RunsIn(BaseModel):
    job_plan: dict[str, Any] = Field(description="A plan with its kind: a new one, or an earlier run's with changes.")
    sweep: Sweep | None = None
    reason: text(5_000) = Field("", description="Why, when it goes beyond what the team may decide alone.")


class ChangeOut(BaseModel):
    id: int
    award_id: int
    proposal_id: int
    requested_by: int
    job_plan: dict[str, Any]
    sweep: dict[str, Any]
    beyond: list[str]
    reason: str
    state: str
    decided_by: int | None
    decided_at: datetime | None
    note: str
    run_ids: list[int]
    created_at: datetime


class QueuedOut(BaseModel):
    runs: list[RunPublic]
    sweep_id: int | None
    change_request: ChangeOut | None


class AwardOut(BaseModel):
    id: int
    proposal_id: int
    gpu_hours: float
    used_gpu_hours: float
    balance_gpu_hours: float
    committed_gpu_hours: float  # estimated for its runs still queued or running, beyond what they were charged
    team_run_share: float
    period_ends: datetime
    period_share: float  # how much of the award's period has passed
    used_share: float  # how much of the award is used
    behind: bool  # past a pacing point with less used than it asks
    runs: list[RunPublic]


class PaceOut(BaseModel):
    award_id: int
    proposal_id: int
    title: str
    gpu_hours: float
    hours_left: float
    period_ends: datetime
    period_share: float
    used_share: float
    behind: bool


class SweepRowOut(BaseModel):
    value: Any
    run: RunPublic
    charged_s: int
    final_loss: float | None


class SweepOut(BaseModel):
    id: int
    award_id: int
    field: str
    values: list[Any]
    rows: list[SweepRowOut]


class Decision(BaseModel):
    approve: bool
    note: text(2_000) = ""


def change_out(change: ChangeRequest) -> ChangeOut:
    return ChangeOut(**change.model_dump())


def award_out(session: Session, award: Award) -> AwardOut:
    call = session.get(Call, session.get(Proposal, award.proposal_id).call_id)
    runs = session.exec(select(Run).where(Run.award_id == award.id).order_by(Run.id)).all()
    step = pacing.pace(session, award)
    return AwardOut(id=award.id, proposal_id=award.proposal_id, gpu_hours=award.gpu_hours,
                    period_ends=award.exclusive_until, period_share=step.period_share, used_share=step.used_share,
                    behind=step.behind,
                    used_gpu_hours=round(award_used(session, award.id) / 3600, 4),
                    balance_gpu_hours=round(award_balance(session, award.id) / 3600, 4),
                    committed_gpu_hours=phase2.committed_s(session, award) / 3600,
                    team_run_share=call.team_run_share, runs=[describe(session, r) for r in runs])


@router.get("/awards", response_model=list[PaceOut])
def awards_pace(admin: AdminUser, session: SessionDep) -> list[PaceOut]:
    """The committee: every award still in its period, those behind their pace first (admins)."""
    return [PaceOut(award_id=p.award.id, proposal_id=p.award.proposal_id, title=p.title, gpu_hours=p.award.gpu_hours,
                    hours_left=p.hours_left, period_ends=p.award.exclusive_until, period_share=p.period_share,
                    used_share=p.used_share, behind=p.behind) for p in pacing.behind(session)]


@router.get("/awards/{award_id}", response_model=AwardOut)
def get_award(award_id: IdPath, user: CurrentUser, session: SessionDep) -> AwardOut:
    """The award's hours, used, left and committed to its queued runs, and its runs (its team and admins)."""
    return award_out(session, phase2.visible_award(session, user, award_id))


@router.post("/awards/{award_id}/runs", response_model=QueuedOut, status_code=201)
def queue_runs(award_id: IdPath, data: RunsIn, user: CurrentUser, session: SessionDep) -> QueuedOut:
    """Queue a further run (or a sweep: one run per value of one field) on the award (its team). Beyond what the
    call lets a team decide alone, it becomes a change request for the committee, with the reason given."""
    phase2.visible_award(session, user, award_id)
    queued = phase2.queue_runs(session, user, award_id, data.job_plan,
                               sweep=data.sweep.model_dump() if data.sweep else None, reason=data.reason)
    session.commit()
    return QueuedOut(runs=[describe(session, r) for r in queued.runs],
                     sweep_id=queued.sweep.id if queued.sweep else None,
                     change_request=change_out(queued.change) if queued.change else None)


@router.get("/change-requests", response_model=list[ChangeOut])
def list_changes(user: CurrentUser, session: SessionDep, pending: bool = False) -> list[ChangeOut]:
    """Change requests: every one for the committee (admins), a team's own for its members."""
    return [change_out(c) for c in phase2.changes(session, user, pending_only=pending)]


@router.post("/change-requests/{change_id}/decision", response_model=ChangeOut)
def decide_change(change_id: IdPath, data: Decision, admin: AdminUser, session: SessionDep) -> ChangeOut:
    """Approve (its runs are queued) or refuse a change request (the committee: admins); audited, the team told."""
    change = phase2.decide_change(session, admin, change_id, approve=data.approve, note=data.note)
    session.commit()
    return change_out(change)


@router.get("/sweeps/{group_id}", response_model=SweepOut)
def get_sweep(group_id: IdPath, user: CurrentUser, session: SessionDep) -> SweepOut:
    """A sweep's runs side by side: each value, its run's state and charge, and its last loss (team, admins)."""
    group = get_visible(session, actor=user, group_id=group_id, kind="sweep")
    return SweepOut(id=group.id, award_id=group.award_id, field=group.field, values=group.values,
                    rows=[SweepRowOut(value=r.value, run=describe(session, r.run), charged_s=r.charged_s,
                                      final_loss=r.final_loss) for r in phase2.sweep_rows(session, group)])
