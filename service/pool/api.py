"""The pool: public figures for anyone, owners' machines for their owners and the admins, and the calls a joining
machine makes with its own token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from jobs.credentials import pool_token_id
from jobs.version import installed_version
from service.config import Settings
from service.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from service.errors import Conflict, Unauthenticated
from service.models import Machine
from service.pool import machines, service, standing
from service.pool.reach import pool_reach
from service.pool.schemas import (
    JoinGrant,
    JoinTicket,
    MachineControls,
    MachineCreate,
    MachineDecision,
    MachinePublic,
    Measurement,
    NodePublic,
    Orders,
    PublicPool,
)
from service.types import IdPath

router = APIRouter(tags=["pool"])


@router.get("/pool", response_model=PublicPool)
def public_pool(session: SessionDep) -> PublicPool:
    """Machines, GPUs and GPU memory online, hours delivered this week, and the owners who chose to be named (no
    sign-in)."""
    return standing.public_pool(session)


@router.get("/pool/nodes", response_model=list[NodePublic])
def pool_nodes(admin: AdminUser, session: SessionDep) -> list[NodePublic]:
    """Every Ray node the scheduler has seen, alive first (admins)."""
    return [NodePublic.model_validate(n, from_attributes=True) for n in service.list_nodes(session)]


def _one(session: SessionDep, machine: Machine) -> MachinePublic:
    return standing.describe(session, [machine])[0]


@router.get("/machines", response_model=list[MachinePublic])
def list_machines(user: CurrentUser, session: SessionDep) -> list[MachinePublic]:
    """Your machines (every machine, for admins), with their status and the hours they ran work."""
    return standing.describe(session, machines.visible_machines(session, user))


@router.post("/machines", response_model=MachinePublic, status_code=201)
def register_machine(data: MachineCreate, user: CurrentUser, session: SessionDep) -> MachinePublic:
    """Register a machine to lend to the pool (owners): an admin approves it before it may join Ray; a volunteer's
    machine (`volunteer: true`) needs no approval, never joins Ray, and its results count once validated."""
    machine = machines.register(session, user, name=data.name, show_owner=data.show_owner,
                                volunteer=data.volunteer)
    session.commit()
    return _one(session, machine)


@router.get("/machines/{machine_id}", response_model=MachinePublic)
def get_machine(machine_id: IdPath, user: CurrentUser, session: SessionDep) -> MachinePublic:
    return _one(session, machines.machine_for(session, user, machine_id))


@router.patch("/machines/{machine_id}", response_model=MachinePublic)
def control_machine(machine_id: IdPath, data: MachineControls, user: CurrentUser,
                    session: SessionDep) -> MachinePublic:
    """Pause or resume, cap the hours of work per day, drain (finish the current run, then leave), or choose
    whether the public pool page names you (the owner)."""
    machine = machines.set_controls(session, user, machine_id, **data.model_dump())
    session.commit()
    return _one(session, machine)


@router.post("/machines/{machine_id}/decision", response_model=MachinePublic)
def decide_machine(machine_id: IdPath, data: MachineDecision, admin: AdminUser,
                   session: SessionDep) -> MachinePublic:
    """Approve, reject or revoke a machine (admins). Revoking stops its work: its run checkpoints and moves."""
    if data.decision == "revoke":
        machine = machines.revoke(session, admin, machine_id, message=data.message)
    else:
        machine = machines.decide(session, admin, machine_id, approve=data.decision == "approve",
                                  message=data.message)
    session.commit()
    return _one(session, machine)


@router.post("/machines/{machine_id}/leave", response_model=MachinePublic)
def leave_machine(machine_id: IdPath, user: CurrentUser, session: SessionDep) -> MachinePublic:
    """Take your machine out of the pool now: its run checkpoints and resumes elsewhere (the owner)."""
    machine = machines.leave(session, user, machine_id)
    session.commit()
    return _one(session, machine)


def join_command(settings: Settings, token: str, *, volunteer: bool = False) -> str:
    """The command that lends the machine: a volunteer's agent, or a node of the Ray pool."""
    verb = "volunteer" if volunteer else "pool join"
    return f"OBSERVATORY_MACHINE_TOKEN={token} observatory {verb} {settings.base_url.rstrip('/')}"


@router.post("/machines/{machine_id}/join-token", response_model=JoinTicket)
def machine_join_token(machine_id: IdPath, user: CurrentUser, session: SessionDep,
                       settings: SettingsDep) -> JoinTicket:
    """A new token for `observatory pool join` on this approved machine, and the command; shown once, and the
    previous token stops working (the owner)."""
    machine, token = machines.issue_token(session, user, machine_id)
    session.commit()
    return JoinTicket(machine_id=machine.id, token=token,
                      command=join_command(settings, token, volunteer=machine.volunteer))


@router.delete("/machines/{machine_id}/join-token", response_model=MachinePublic)
def forget_join_token(machine_id: IdPath, user: CurrentUser, session: SessionDep) -> MachinePublic:
    """Revoke the machine's credential now: its next call is refused until a new one is shown (the owner)."""
    machine = machines.forget_token(session, user, machine_id)
    session.commit()
    return _one(session, machine)


# ---- called by the machine itself, with its own token ---------------------------------------------------------

def machine_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise Unauthenticated("this call takes a machine's token (Authorization: Bearer mc_…)")
    return header[7:].strip()


MachineToken = Annotated[str, Depends(machine_token)]


@router.post("/pool/join", response_model=JoinGrant)
def join_pool(data: Measurement, token: MachineToken, session: SessionDep, settings: SettingsDep) -> JoinGrant:
    """A machine measured itself and joins: it gets the head's address, the pool's Ray token, and the labels to
    declare (approved machines only)."""
    machine = machines.record_join(session, machines.machine_for_token(session, token), data)
    address = pool_reach(settings).address
    if address is None:
        raise Conflict(f"{pool_reach(settings).note} Ask the observatory's operator.")
    session.commit()
    return JoinGrant(machine_id=machine.id, head_address=address, ray_token=settings.resolved_ray_auth_token(),
                     labels=standing.labels_for(machine), num_gpus=machine.gpu_count, num_cpus=machine.cpus,
                     release=settings.required_worker_version or installed_version())


@router.post("/pool/orders", response_model=Orders)
def machine_orders(token: MachineToken, session: SessionDep, settings: SettingsDep) -> Orders:
    """A joined machine calls in and learns whether to stay or leave (its own token)."""
    machine = machines.orders(session, machines.machine_for_token(session, token))
    session.commit()
    leave = machine.state != "approved"
    return Orders(machine_id=machine.id, state=machine.state, paused=machine.paused, draining=machine.draining,
                  leave=leave, message=machine.message, busy=machines.busy(session, machine.id),
                  pool_token_id=pool_token_id(settings.resolved_ray_auth_token()))
