"""The pool: its size for anyone signed in, its nodes (owners' addresses) for admins."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import AdminUser, CurrentUser, SessionDep
from service.pool import service
from service.pool.schemas import NodePublic, PoolSummary

router = APIRouter(tags=["pool"])


@router.get("/pool", response_model=PoolSummary)
def pool_summary(user: CurrentUser, session: SessionDep) -> PoolSummary:
    """Nodes alive and the GPUs and CPUs they offer, as the scheduler last saw them."""
    return service.summary(session)


@router.get("/pool/nodes", response_model=list[NodePublic])
def pool_nodes(admin: AdminUser, session: SessionDep) -> list[NodePublic]:
    """Every node the scheduler has seen, alive first (admins)."""
    return [NodePublic.model_validate(n, from_attributes=True) for n in service.list_nodes(session)]
