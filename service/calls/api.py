"""Calls for proposals: public to read, opened by admins."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.audit.service import record
from service.calls import service, summary
from service.calls.schemas import CallCreate, CallPublic, CycleCreate, CyclePublic
from service.deps import AdminUser, SessionDep
from service.types import IdPath

router = APIRouter(tags=["calls"])


@router.get("/calls", response_model=list[CallPublic])
def list_calls(session: SessionDep) -> list[CallPublic]:
    """Every call, newest deadline first. Public: a call is an announcement."""
    return [service.to_public(session, call) for call in service.list_calls(session)]


@router.get("/calls/{call_id}", response_model=CallPublic)
def get_call(call_id: IdPath, session: SessionDep) -> CallPublic:
    """One call. Public."""
    return service.to_public(session, service.get_call(session, call_id))


@router.post("/calls", response_model=CallPublic, status_code=201)
def create_call(data: CallCreate, admin: AdminUser, session: SessionDep) -> CallPublic:
    """Open a call (admins)."""
    call = service.create_call(session, actor=admin, data=data)
    session.commit()
    return service.to_public(session, call)


class StorageQuota(BaseModel):
    storage_quota_gb: float | None = Field(gt=0, le=1_000_000, allow_inf_nan=False,
                                           description="GB per proposal; null removes the limit.")


@router.put("/calls/{call_id}/storage-quota", response_model=CallPublic)
def set_storage_quota(call_id: IdPath, data: StorageQuota, admin: AdminUser, session: SessionDep) -> CallPublic:
    """Set what each of the call's proposals may keep in the archive (admins); runs waiting for room are placed
    at the next tick once they fit."""
    call = service.get_call(session, call_id)
    call.storage_quota_gb = data.storage_quota_gb
    session.add(call)
    record(session, admin, "call.storage_quota", f"call:{call.id}", storage_quota_gb=data.storage_quota_gb)
    session.commit()
    return service.to_public(session, call)


@router.get("/cycles", response_model=list[CyclePublic])
def list_cycles(session: SessionDep) -> list[CyclePublic]:
    """Every cycle with its capacity and the Director's reserve. Public."""
    return [service.cycle_public(session, c) for c in service.list_cycles(session)]


@router.get("/cycles/{cycle_id}", response_model=CyclePublic)
def get_cycle(cycle_id: IdPath, session: SessionDep) -> CyclePublic:
    """One cycle. Public."""
    return service.cycle_public(session, service.get_cycle(session, cycle_id))


@router.get("/cycles/{cycle_id}/summary", response_model=summary.CycleSummary)
def cycle_summary(cycle_id: IdPath, session: SessionDep) -> summary.CycleSummary:
    """A cycle's report: per call, GPU-hours offered, awarded and used; data products made and public now; and the
    outcomes teams recorded. Public."""
    return summary.summary(session, cycle_id)


@router.post("/cycles", response_model=CyclePublic, status_code=201)
def create_cycle(data: CycleCreate, admin: AdminUser, session: SessionDep) -> CyclePublic:
    """Open a cycle (admins): its capacity, and the Director's reserve (at most 10% of it)."""
    cycle = service.create_cycle(session, actor=admin, data=data)
    session.commit()
    return service.cycle_public(session, cycle)
