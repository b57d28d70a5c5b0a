"""Volunteers' work units: which agents are online, which units want another copy, and what an agent holds.

A unit is a run of a kind unvetted machines may take (`JobKind.volunteers`), placed by the scheduler's one policy
on a volunteer's agent as on any node. Its attempts live in the VOLUNTEER_POOL, which no Ray scheduler touches:
the agent pulls its attempt over HTTPS (`/api/agent/work`), and what it sends back is held on the attempt until
validation (scheduler.volunteers) makes it the run's outputs. A unit goes out in `Run.replicas` copies; each copy
goes to a machine of another owner.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import or_, update
from sqlmodel import Session, select

from jobs.kinds import KINDS
from service.models import AttemptState, Machine, MachineState, Run, RunAttempt, RunState
from service.runs.state import LIVE_ATTEMPT, move_attempt
from service.timeutil import utcnow
from service.volunteers import segments

VOLUNTEER_POOL = "volunteers"
AGENT_NODE_PREFIX = "agent-"  # the node id the policy knows a volunteer's agent by: agent-<machine id>
ONLINE_S = 90.0  # an agent that asked for work this recently is online (it asks at least every 30 s)
TRUSTED_AFTER = 10  # validated results in a row before a volunteer's units go out as single copies
SPOT_CHECK = 0.1  # the share of a newly trusted volunteer's units that are copied all the same…
SPOT_FLOOR = 0.02  # …thinning as its record grows (SPOT_CHECK × TRUSTED_AFTER / trust), down to this
MAX_REPLICAS = 5  # copies of one unit before the volunteers are judged unable to agree on it


def volunteer_ok(plan: dict[str, Any]) -> bool:
    """Whether a volunteer's agent may take this plan: its kind allows unvetted machines, and it is one machine's
    work (a model trained by several nodes together exchanges weights inside the vetted pool)."""
    kind = KINDS.get(str(plan.get("kind")))
    return kind is not None and kind.volunteers and int(plan.get("workers") or 1) <= 1


def agent_node_id(machine_id: int) -> str:
    return f"{AGENT_NODE_PREFIX}{machine_id}"


def machine_of_agent_node(node_id: str) -> int | None:
    suffix = node_id.removeprefix(AGENT_NODE_PREFIX)
    return int(suffix) if node_id.startswith(AGENT_NODE_PREFIX) and suffix.isdigit() else None


def online_agents(session: Session) -> list[Machine]:
    """Volunteers' machines whose agent asked for work lately and that measured themselves."""
    since = utcnow() - timedelta(seconds=ONLINE_S)
    return list(session.exec(select(Machine).where(
        Machine.volunteer, Machine.state == MachineState.approved, Machine.measured_at.is_not(None),
        Machine.last_contact_at >= since).order_by(Machine.id)))


class Wanted(NamedTuple):
    """One more copy a unit out with volunteers wants: the run, the machines that must not take it, and for a
    check of a volunteer's training, the segment to re-run (service.volunteers.segments.check_spec)."""

    run: Run
    avoid: frozenset[int]
    check: dict[str, Any] | None = None


def copies_wanted(session: Session) -> list[Wanted]:
    """Units out with volunteers that want another copy, or a check of their training."""
    now = utcnow()
    runs = session.exec(select(Run).where(Run.state == RunState.running, Run.pool == VOLUNTEER_POOL,
                                          Run.cancel_requested.is_(False),
                                          or_(Run.claim_token.is_(None), Run.claim_expires_at < now))).all()
    wanted = []
    for run in runs:
        attempts = list(session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)))
        one = _check_wanted(session, attempts) if KINDS[run.job_kind].validated_by == "segments" else None
        if one is None:
            one = _copy_wanted(session, run, [a for a in attempts if not a.segment_check])
        if one is not None:
            wanted.append(Wanted(run, *one))
    return wanted


def _counting(attempts: list[RunAttempt]) -> list[RunAttempt]:
    return [a for a in attempts if a.state in LIVE_ATTEMPT
            or (a.state == AttemptState.succeeded and a.verdict in ("", "agreed"))]


def _owners_machines(session: Session, attempts: list[RunAttempt]) -> set[int]:
    """Every machine of the owners of these attempts' machines."""
    owners = {session.get(Machine, a.machine_id).owner_id for a in attempts if a.machine_id is not None}
    return set(session.exec(select(Machine.id).where(Machine.owner_id.in_(owners))).all()) if owners else set()


def _copy_wanted(session: Session, run: Run, attempts: list[RunAttempt]) -> tuple[frozenset[int], None] | None:
    """Another copy of the unit, for a machine of another owner; a copy lost or failed does not bar its owner from
    trying again, a result proven wrong does."""
    counting = _counting(attempts)
    if len(counting) >= max(run.replicas, 1):
        return None
    return frozenset(_owners_machines(session, counting + [a for a in attempts if a.verdict == "wrong"])), None


def _check_wanted(session: Session, attempts: list[RunAttempt]) -> tuple[frozenset[int], dict[str, Any]] | None:
    """A check of a training awaiting validation: the first chosen segment with fewer re-runs than it needs, for a
    machine of an owner who has not trained or re-run it, with the same kind of processor as the training's."""
    trained = next((a for a in attempts if not a.segment_check and a.state == AttemptState.succeeded
                    and a.verdict == "" and a.segments), None)
    if trained is None or trained.machine_id is None:
        return None
    for index, segment in enumerate(trained.segments):
        checks = _counting([a for a in attempts if a.segment_check.get("of") == trained.number
                            and a.segment_check.get("segment") == index])
        if len(checks) < int(segment["copies"]):
            with_gpu = session.get(Machine, trained.machine_id).gpu_count > 0
            other_kind = session.exec(select(Machine.id).where(
                Machine.volunteer, Machine.gpu_count == 0 if with_gpu else Machine.gpu_count > 0)).all()
            avoid = _owners_machines(session, [trained, *checks]) | set(other_kind)
            return frozenset(avoid), segments.check_spec(trained, index)
    return None


def spot_check_rate(trust: int) -> float:
    """The share of a trusted volunteer's units copied all the same: a tenth at first, fewer as its record of
    validated results grows (a proven wrong result zeroes the record, and every unit is copied again)."""
    return max(SPOT_FLOOR, SPOT_CHECK * TRUSTED_AFTER / max(trust, 1))


def copies_needed(machine: Machine) -> int:
    """How many copies of a unit first placed on this machine go out: one for a volunteer with a long record of
    validated results (spot-checked now and then), two otherwise."""
    if machine.trust >= TRUSTED_AFTER and random.random() >= spot_check_rate(machine.trust):
        return 1
    return 2


def claim_copy(session: Session, run_id: int, token: str, ttl_s: int) -> bool:
    """Claim a unit out with volunteers to place one more copy of it; a racing scheduler gets False."""
    now = utcnow()
    claimed = session.execute(update(Run).where(
        Run.id == run_id, Run.state == RunState.running, Run.pool == VOLUNTEER_POOL,
        or_(Run.claim_token.is_(None), Run.claim_expires_at < now))
        .values(claim_token=token, claim_expires_at=now + timedelta(seconds=ttl_s))
        .execution_options(synchronize_session=False)).rowcount
    session.commit()
    return claimed == 1


def release_copy(session: Session, run_id: int, token: str) -> None:
    session.execute(update(Run).where(Run.id == run_id, Run.claim_token == token)
                    .values(claim_token=None, claim_expires_at=None).execution_options(synchronize_session=False))


def unit_for(session: Session, machine: Machine) -> RunAttempt | None:
    """The live attempt placed on this volunteer's machine, if any (an agent runs one unit at a time)."""
    return session.exec(select(RunAttempt).where(RunAttempt.machine_id == machine.id,
                                                 RunAttempt.pool == VOLUNTEER_POOL,
                                                 RunAttempt.state.in_(LIVE_ATTEMPT)).order_by(RunAttempt.id)).first()


def give_back(session: Session, machine: Machine) -> int:
    """A restarted agent gives back the unit it had begun: the attempt is lost, and another copy goes out."""
    given = 0
    for attempt in session.exec(select(RunAttempt).where(RunAttempt.machine_id == machine.id,
                                                         RunAttempt.pool == VOLUNTEER_POOL,
                                                         RunAttempt.state.in_(LIVE_ATTEMPT),
                                                         RunAttempt.started_at.is_not(None))).all():
        move_attempt(session, attempt, AttemptState.lost, "its agent restarted and gave the unit back",
                     actor=f"machine:{machine.id}")
        given += 1
    return given
