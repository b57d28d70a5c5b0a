"""The calls a volunteer's agent makes with its machine's credential: say hello with what it measured, then ask for
work. The unit itself travels over the job channel (/api/job/…), with the attempt's token and the credential."""

from __future__ import annotations

import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from jobs.version import installed_version
from service.attempts.service import claim_for_machine
from service.db import writer
from service.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from service.errors import Forbidden
from service.models import Machine, MachineState, Run, RunAttempt
from service.pool import machines
from service.pool.api import MachineToken
from service.pool.schemas import Measurement
from service.timeutil import utcnow
from service.types import IdPath
from service.volunteers import credit, donors, segments, units

router = APIRouter(prefix="/agent", tags=["volunteers' agents"])
standings_router = APIRouter(tags=["volunteers' agents"])
LONGEST_WAIT_S = 25
LOOK_EVERY_S = 2.0  # a long poll looks for a unit this often
CONTACT_EVERY_S = 10.0  # an agent's last contact is written at most this often


class AgentWelcome(BaseModel):
    machine_id: int
    name: str
    release: str  # the commons-observatory release its jobs must run
    poll_s: float  # how long to wait between asks when the answer came at once


class Unit(BaseModel):
    """A work unit: its attempt's token (for the job channel, beside the machine's credential) and what it is."""

    run_id: int
    attempt: int
    kind: str
    submission_id: str
    token: str


class AgentOrders(BaseModel):
    machine_id: int
    state: MachineState
    paused: bool
    leave: bool  # stop asking: the owner took the machine out, or an admin revoked it
    message: str
    unit: Unit | None = None


@router.post("/hello", response_model=AgentWelcome)
def hello(data: Measurement, token: MachineToken, session: SessionDep, settings: SettingsDep) -> AgentWelcome:
    """The agent starts: what it measured of its machine is recorded (volunteers' machines only)."""
    machine = machines.record_join(session, machines.machine_for_token(session, token), data, agent=True)
    session.commit()
    return AgentWelcome(machine_id=machine.id, name=machine.name, poll_s=5.0,
                        release=settings.required_worker_version or installed_version())


def _leaves(machine: Machine, attempt: RunAttempt | None) -> bool:
    """Whether the agent stops asking: the owner took the machine out, or it drains with no unit left."""
    return machine.state != MachineState.approved or machine.draining and attempt is None


def _orders(session: Session, machine: Machine) -> AgentOrders:
    now = utcnow()
    if machine.last_contact_at is None or (now - machine.last_contact_at).total_seconds() >= CONTACT_EVERY_S:
        machine.last_contact_at = now  # written now and then, not on every check of a long poll
        session.add(machine)
    attempt = units.unit_for(session, machine)
    orders = AgentOrders(machine_id=machine.id, state=machine.state, paused=machine.paused,
                         leave=_leaves(machine, attempt), message=machine.message)
    attempt = attempt if not orders.leave else None
    if attempt is not None and attempt.started_at is None:  # handed out once; a restarted agent gives it back
        attempt, token = claim_for_machine(session, machine.id, attempt.submission_id)
        run = session.get(Run, attempt.run_id)
        orders.unit = Unit(run_id=run.id, attempt=attempt.number,
                           kind=segments.attempt_kind(run.job_kind, attempt).name,
                           submission_id=attempt.submission_id, token=token)
    session.commit()
    return orders


def _quiet_look(engine: Engine, token: str) -> AgentOrders | None:
    """The orders, read without writing, when this look has nothing to write (no unit to hand out, no contact to
    stamp): most looks of a long poll, which then take no write lock. None when the look must write."""
    with Session(engine, expire_on_commit=False) as session:
        machine = machines.machine_for_token(session, token)
        if not machine.volunteer:
            raise Forbidden(f"machine {machine.id} is registered for the Ray pool: it takes work by joining it")
        if machine.last_contact_at is None or (utcnow() - machine.last_contact_at).total_seconds() >= CONTACT_EVERY_S:
            return None
        attempt = units.unit_for(session, machine)
        leave = _leaves(machine, attempt)
        if attempt is not None and attempt.started_at is None and not leave:
            return None
        return AgentOrders(machine_id=machine.id, state=machine.state, paused=machine.paused, leave=leave,
                           message=machine.message)


def _check(engine: Engine, token: str, restarted: bool) -> tuple[AgentOrders, int]:
    """One look for work, in a short transaction of its own: (the orders, units given back)."""
    if not restarted:
        quiet = _quiet_look(engine, token)
        if quiet is not None:
            return quiet, 0
    with Session(writer(engine), expire_on_commit=False) as session:
        machine = machines.machine_for_token(session, token)
        if not machine.volunteer:
            raise Forbidden(f"machine {machine.id} is registered for the Ray pool: it takes work by joining it")
        given_back = units.give_back(session, machine) if restarted else 0
        return _orders(session, machine), given_back


@router.post("/work", response_model=AgentOrders, responses={200: {"description": "orders, with a unit or none"}})
async def ask_for_work(token: MachineToken, request: Request, response: Response,
                       wait_s: Annotated[int, Query(ge=0, le=LONGEST_WAIT_S)] = 0,
                       restarted: Annotated[bool, Query()] = False) -> AgentOrders:
    """Ask for a unit, waiting up to `wait_s` seconds for one (a long poll): the orders say whether to go on, and
    carry the unit placed on this machine, if any. Asking keeps the machine online for the scheduler. An agent
    that starts again says `restarted`: a unit it had begun is given back (another volunteer gets a copy).
    The wait holds no thread and no database connection between looks."""
    engine = request.app.state.engine
    deadline = time.monotonic() + wait_s
    orders, given_back = await run_in_threadpool(_check, engine, token, restarted)
    while orders.unit is None and not orders.leave and time.monotonic() < deadline:
        await anyio.sleep(LOOK_EVERY_S)
        orders, _ = await run_in_threadpool(_check, engine, token, False)
    response.headers["Cache-Control"] = "no-store"
    if given_back:
        response.headers["X-Units-Given-Back"] = str(given_back)
    return orders


@standings_router.get("/volunteers", response_model=credit.VolunteerStandings)
def volunteer_standings(session: SessionDep) -> credit.VolunteerStandings:
    """Validated credit (GPU-hours scaled by GPU class): owners who chose to be named, and teams; and the donor
    shares awarded (no sign-in)."""
    return donors.public_standings(session)


class DonorClaim(BaseModel):
    claimed: bool = True


class DonorClaimed(BaseModel):
    proposal_id: int
    donor_claim: bool
    unspent_credit_hours: float


class DonorAwarded(BaseModel):
    proposal_id: int
    award_id: int
    gpu_hours: float


@standings_router.post("/proposals/{proposal_id}/donor-claim", response_model=DonorClaimed)
def claim_donor_share(proposal_id: IdPath, data: DonorClaim, user: CurrentUser, session: SessionDep) -> DonorClaimed:
    """The PI, an owner whose volunteers' machines earned credit, claims a donor share of the proposal's call (or,
    with `claimed: false`, withdraws the claim)."""
    proposal = donors.claim(session, user, proposal_id, claimed=data.claimed)
    session.commit()
    return DonorClaimed(proposal_id=proposal.id, donor_claim=proposal.donor_claim,
                        unspent_credit_hours=round(donors.unspent_credit_s(session, user.id) / 3600, 4))


@standings_router.post("/calls/{call_id}/donor-shares", response_model=list[DonorAwarded], status_code=201)
def award_donor_shares(call_id: IdPath, admin: AdminUser, session: SessionDep,
                       settings: SettingsDep) -> list[DonorAwarded]:
    """The committee awards the call's reserved donor share among its claims, in proportion to credit."""
    shares = donors.award_shares(session, admin, call_id, gpus_per_run=max(settings.gpus_per_run, 1))
    session.commit()
    return [DonorAwarded(proposal_id=s.proposal_id, award_id=s.award_id, gpu_hours=s.gpu_hours) for s in shares]
