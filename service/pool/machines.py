"""Machines owners lend to the pool: registration, an admin's decision, joining, and the owner's controls.

The states, and the only ways between them (each a conditional update, so a lost race is a clear 409):

    pending  -> approved   an admin approves it
    pending  -> rejected   an admin rejects it, saying why
    pending  -> left       its owner withdraws it
    approved -> revoked    an admin withdraws it: no new work; its current run is checkpointed and moved
    approved -> left       its owner takes it out: its current run is checkpointed and moved; or, drained, once
                           its current run has finished
    revoked  -> approved   an admin reinstates it

Within `approved`, the owner may pause it (no new work; a run on it carries on), cap the hours of work it does
per UTC day (at the cap its run checkpoints and moves, and it takes nothing more that day), and drain it (no new
work; it leaves once its current run ends). `observatory pool join` on the
machine asks for its orders and stops its Ray node when it is told to leave.
"""

from __future__ import annotations

import secrets

from sqlalchemy import update
from sqlmodel import Session, select

from service.audit.service import record
from service.auth.service import token_hash
from service.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from service.models import Machine, MachineState, Role, Run, RunAttempt, User
from service.pool.schemas import Measurement
from service.pool.standing import day_start, hours_on
from service.rounds.service import in_rounds
from service.runs.state import LIVE_ATTEMPT, STOP_MOVE
from service.timeutil import utcnow
from service.volunteers.units import VOLUNTEER_POOL

TOKEN_PREFIX = "mc_"
ALLOWED = {
    MachineState.pending: {MachineState.approved, MachineState.rejected, MachineState.left},
    MachineState.approved: {MachineState.revoked, MachineState.left},
    MachineState.revoked: {MachineState.approved},
    MachineState.rejected: set(),
    MachineState.left: set(),
}


# ---- who may see and do what: the one place that answers it --------------------------------------------------

def visible_machines(session: Session, actor: User) -> list[Machine]:
    """Admins see every machine; an owner sees their own."""
    query = select(Machine).order_by(Machine.id)
    if not actor.has(Role.admin):
        query = query.where(Machine.owner_id == actor.id)
    return list(session.exec(query))


def machine_for(session: Session, actor: User, machine_id: int, *, as_owner: bool = False,
                as_admin: bool = False) -> Machine:
    """The machine if `actor` may see it (404 otherwise, so ids reveal nothing); 403 when they may see it but the
    action is the owner's (`as_owner`) or an admin's (`as_admin`)."""
    machine = session.get(Machine, machine_id)
    mine = machine is not None and machine.owner_id == actor.id
    if machine is None or not (mine or actor.has(Role.admin)):
        raise NotFound(f"no machine {machine_id}")
    if as_owner and not mine:
        raise Forbidden("only the machine's owner may do this")
    if as_admin and not actor.has(Role.admin):
        raise Forbidden("only an admin may do this")
    return machine


# ---- transitions ----------------------------------------------------------------------------------------------

def _move(session: Session, machine: Machine, target: MachineState, message: str = "",
          actor: User | None = None) -> Machine:
    if target not in ALLOWED[machine.state]:
        raise Conflict(f"machine {machine.id} is {machine.state}; it cannot become {target}")
    values: dict = {"state": target, "message": message[:500]}
    if actor is not None and actor.has(Role.admin) and actor.id != machine.owner_id:
        values |= {"decided_by": actor.id, "decided_at": utcnow()}
    moved = session.execute(update(Machine).where(Machine.id == machine.id, Machine.state == machine.state)
                            .values(**values).execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        raise Conflict(f"machine {machine.id} changed meanwhile; reload and try again")
    session.refresh(machine)
    if target in (MachineState.revoked, MachineState.left):
        move_runs_off(session, machine, f"its machine {machine.name!r} was {target}")
    return machine


def move_runs_off(session: Session, machine: Machine, why: str) -> int:
    """Ask the runs on this machine to checkpoint and stop, to resume elsewhere; returns how many were asked."""
    here = session.exec(select(RunAttempt).where(RunAttempt.machine_id == machine.id,
                                                 RunAttempt.state.in_(LIVE_ATTEMPT))).all()
    if not here:
        return 0
    # A run trained by several nodes loses only its worker here: the others go on, and a free node takes its place.
    # So does a unit out with volunteers: this copy stops, the others go on, and another volunteer gets one.
    workers = [a for a in here if a.pool == VOLUNTEER_POOL or (in_rounds(session.get(Run, a.run_id))
                                                              and _other_workers(session, a.run_id, machine.id))]
    for attempt in workers:
        if attempt.stop_reason is None:
            attempt.stop_reason = STOP_MOVE
            attempt.message = f"moving: {why}; the run goes on with its other workers"
            session.add(attempt)
    run_ids = {a.run_id for a in here} - {a.run_id for a in workers}
    moved = session.execute(update(Run).where(Run.id.in_(run_ids), Run.stop_reason.is_(None))
                            .values(stop_reason=STOP_MOVE, message=f"moving: {why}; saving a checkpoint")
                            .execution_options(synchronize_session=False)).rowcount if run_ids else 0
    return moved + len(workers)


def _other_workers(session: Session, run_id: int, machine_id: int) -> bool:
    """Whether the run has live workers on other machines (or the head) than this one."""
    return session.exec(select(RunAttempt.id).where(RunAttempt.run_id == run_id, RunAttempt.state.in_(LIVE_ATTEMPT),
                                                    (RunAttempt.machine_id != machine_id)
                                                    | RunAttempt.machine_id.is_(None))).first() is not None


def register(session: Session, owner: User, *, name: str, show_owner: bool, volunteer: bool = False) -> Machine:
    """A machine for the Ray pool waits for an admin's approval; a volunteer's machine (an agent that pulls work and
    never joins Ray, whose results are validated) needs nobody's and may start at once."""
    if not owner.has(Role.owner):
        raise Forbidden("add the owner role to your account first (POST /api/me/roles, or the portal's "
                        "Machines page)")
    machine = Machine(owner_id=owner.id, name=name, show_owner=show_owner, volunteer=volunteer,
                      state=MachineState.approved if volunteer else MachineState.pending)
    session.add(machine)
    session.flush()
    if volunteer:
        record(session, owner, "machine.volunteer", f"machine:{machine.id}")
    return machine


def decide(session: Session, admin: User, machine_id: int, *, approve: bool, message: str = "") -> Machine:
    """Approve or reject a pending machine; approving a revoked one reinstates it."""
    machine = machine_for(session, admin, machine_id, as_admin=True)
    if not approve and not message.strip():
        raise Invalid("say why the machine is rejected: its owner reads it")
    moved = _move(session, machine, MachineState.approved if approve else MachineState.rejected, message, admin)
    record(session, admin, "machine.approve" if approve else "machine.reject", f"machine:{machine_id}",
           message=message)
    return moved


def revoke(session: Session, admin: User, machine_id: int, *, message: str) -> Machine:
    machine = machine_for(session, admin, machine_id, as_admin=True)
    if not message.strip():
        raise Invalid("say why the machine is revoked: its owner reads it")
    moved = _move(session, machine, MachineState.revoked, message, admin)
    record(session, admin, "machine.revoke", f"machine:{machine_id}", message=message)
    return moved


def leave(session: Session, owner: User, machine_id: int) -> Machine:
    """Take the machine out now: a run on it checkpoints and resumes elsewhere."""
    machine = machine_for(session, owner, machine_id, as_owner=True)
    return _move(session, machine, MachineState.left, "its owner took it out of the pool", owner)


def set_controls(session: Session, owner: User, machine_id: int, *, paused: bool | None = None,
                 draining: bool | None = None, hours_per_day: float | None = None, clear_cap: bool = False,
                 show_owner: bool | None = None, team: str | None = None) -> Machine:
    machine = machine_for(session, owner, machine_id, as_owner=True)
    if machine.state in (MachineState.left, MachineState.rejected):
        raise Conflict(f"machine {machine.id} is {machine.state}; register it again to lend it")
    if draining is not None and machine.state != MachineState.approved:
        raise Conflict(f"machine {machine.id} is {machine.state}; only an approved machine can be drained")
    if paused is not None:
        machine.paused = paused
    if draining is not None:
        machine.draining = draining
    if clear_cap:
        machine.hours_per_day = None
    elif hours_per_day is not None:
        machine.hours_per_day = hours_per_day
    if show_owner is not None:
        machine.show_owner = show_owner
    if team is not None:
        if team.strip() and not machine.volunteer:
            raise Invalid("teams are for volunteers' machines: a machine of the Ray pool earns no credit")
        machine.team = team.strip()
    session.add(machine)
    session.flush()
    return machine


def forget_token(session: Session, owner: User, machine_id: int) -> Machine:
    """Revoke the machine's credential at once: its next call is refused, until a new one is shown."""
    machine = machine_for(session, owner, machine_id, as_owner=True)
    machine.token_hash = None
    session.add(machine)
    record(session, owner, "machine.credential_revoked", f"machine:{machine.id}")
    session.flush()
    return machine


def issue_token(session: Session, owner: User, machine_id: int) -> tuple[Machine, str]:
    """A new credential for `observatory pool join` on this machine, shown once; the previous one stops working."""
    machine = machine_for(session, owner, machine_id, as_owner=True)
    if machine.state != MachineState.approved:
        raise Conflict(f"machine {machine.id} is {machine.state}; it can join once an admin approves it")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    machine.token_hash = token_hash(token)
    session.add(machine)
    session.flush()
    return machine, token


# ---- the machine itself, by its token ---------------------------------------------------------------------------

def machine_for_token(session: Session, token: str) -> Machine:
    machine = session.exec(select(Machine).where(Machine.token_hash == token_hash(token))).first() \
        if token.startswith(TOKEN_PREFIX) else None
    if machine is None:
        raise Unauthenticated("this machine token is not valid: show the join command again in the portal")
    return machine


def record_join(session: Session, machine: Machine, measured: Measurement, *, agent: bool = False) -> Machine:
    """The machine measured itself and is joining (`agent`: a volunteer's agent starting): refused unless it is
    approved, and unless it is the right kind: a volunteer's machine never joins Ray (it would hold the pool's
    token), and a machine of the Ray pool joins with `pool join`."""
    if machine.state != MachineState.approved:
        raise Forbidden(f"machine {machine.id} is {machine.state}"
                        + (f": {machine.message}" if machine.message else ""))
    if machine.volunteer and not agent:
        raise Forbidden(f"machine {machine.id} is a volunteer's: it takes work with `observatory volunteer`, "
                        "never by joining the Ray pool")
    if agent and not machine.volunteer:
        raise Forbidden(f"machine {machine.id} is registered for the Ray pool: join it with `observatory pool join` "
                        "(or register another machine as a volunteer's)")
    for name, value in measured.model_dump().items():
        setattr(machine, name, value)
    if machine.measured_at is None:
        machine.first_gpu_model = machine.gpu_model
    elif (machine.gpu_model or "") != (machine.first_gpu_model or "") and not machine.gpu_flag:
        machine.gpu_flag = (f"it now reports {machine.gpu_model or 'no GPU'}, but first joined with "
                            f"{machine.first_gpu_model or 'no GPU'}: it is charged as the cheaper of the two; "
                            "register a changed card as a new machine")[:500]
        record(session, None, "machine.gpu_changed", f"machine:{machine.id}", first=machine.first_gpu_model,
               now=machine.gpu_model)
    machine.measured_at = machine.last_contact_at = utcnow()
    session.add(machine)
    session.flush()
    return machine


def busy(session: Session, machine_id: int) -> bool:
    return session.exec(select(RunAttempt.id).where(RunAttempt.machine_id == machine_id,
                                                    RunAttempt.state.in_(LIVE_ATTEMPT))).first() is not None


def orders(session: Session, machine: Machine) -> Machine:
    """What the joined machine should do now: it calls in, and leaves when its state says so. A drained machine
    whose run has ended leaves here."""
    machine.last_contact_at = utcnow()
    session.add(machine)
    session.flush()
    _leave_if_drained(session, machine)
    return machine


def _leave_if_drained(session: Session, machine: Machine) -> bool:
    """A draining machine with no run left leaves; returns whether it did."""
    if machine.state != MachineState.approved or not machine.draining or busy(session, machine.id):
        return False
    _move(session, machine, MachineState.left, "drained: its last run ended, and it left the pool")
    return True


def enforce_owner_limits(session: Session) -> int:
    """The owners' limits, applied by the scheduler now and then: a machine that reached its daily cap has its
    runs checkpointed and moved (it takes nothing more until the next UTC day), and a drained machine whose run
    has ended leaves even when its join command is not calling in. Returns how many machines were acted on."""
    acted = 0
    capped = list(session.exec(select(Machine).where(Machine.state == MachineState.approved,
                                                     Machine.hours_per_day.is_not(None))))
    if capped:
        now = utcnow()
        today = hours_on(session, [m.id for m in capped], since=day_start(now), now=now)
        for machine in capped:
            if today.get(machine.id, 0.0) >= machine.hours_per_day and busy(session, machine.id):
                acted += bool(move_runs_off(session, machine, f"its owner's cap of {machine.hours_per_day:g} "
                                                              f"hours a day on {machine.name!r} was reached"))
    for machine in session.exec(select(Machine).where(Machine.state == MachineState.approved, Machine.draining)):
        acted += _leave_if_drained(session, machine)
    session.flush()
    return acted
