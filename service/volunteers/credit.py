"""Volunteers' credit: validated GPU-seconds, scaled by the GPU class, per machine, owner and team, and the public
standings (owners named only where they chose it on a machine, as on the pool page; teams by the name their
machines carry)."""

from __future__ import annotations

import math
from collections import defaultdict

from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, select

from service.models import Machine, RunAttempt, User, VolunteerCredit


class Standing(BaseModel):
    name: str
    credit: float  # GPU-hours of validated work, scaled by GPU class
    units: int  # validated results
    machines: int


class DonorSharePublic(BaseModel):
    """A donor share as anyone may see it (not which proposal it went to: decisions may not be out yet)."""

    call_id: int
    call: str
    gpu_hours: float
    owner: str | None  # named only where the owner chose to be named on a machine


class VolunteerStandings(BaseModel):
    owners: list[Standing]
    teams: list[Standing]
    total_credit: float
    total_units: int
    anonymous_credit: float  # earned by owners who chose not to be named
    donor_shares: list[DonorSharePublic] = []  # credit turned into telescope time, newest first


def record(session: Session, attempt: RunAttempt, machine: Machine, *, seconds: int, factor: float) -> None:
    """Credit one agreeing result (once: a second call for the same attempt changes nothing)."""
    exists = session.exec(select(VolunteerCredit.id).where(VolunteerCredit.run_id == attempt.run_id,
                                                           VolunteerCredit.attempt == attempt.number)).first()
    if exists is None:
        session.add(VolunteerCredit(machine_id=machine.id, owner_id=machine.owner_id, run_id=attempt.run_id,
                                    attempt=attempt.number, gpu_seconds=max(0, seconds),
                                    credit=round(max(0, seconds) * factor, 3)))
        session.flush()


def of_machines(session: Session, machine_ids: list[int]) -> dict[int, tuple[float, int]]:
    """machine id -> (credit in GPU-hours, validated results)."""
    if not machine_ids:
        return {}
    rows = session.exec(select(VolunteerCredit.machine_id, func.sum(VolunteerCredit.credit),
                               func.count(VolunteerCredit.id)).where(VolunteerCredit.machine_id.in_(machine_ids))
                        .group_by(VolunteerCredit.machine_id)).all()
    return {machine_id: (round(total / 3600, 4), count) for machine_id, total, count in rows}


def standings(session: Session, limit: int = 100) -> VolunteerStandings:
    rows = session.exec(select(VolunteerCredit.machine_id, func.sum(VolunteerCredit.credit),
                               func.count(VolunteerCredit.id)).group_by(VolunteerCredit.machine_id)).all()
    machines = {m.id: m for m in session.exec(select(Machine).where(Machine.id.in_([r[0] for r in rows])))}
    named_owners = {m.owner_id for m in machines.values() if m.show_owner}
    names = {u.id: u.name for u in session.exec(select(User).where(User.id.in_(named_owners)))}
    owners: dict[str, list] = defaultdict(lambda: [0.0, 0, set()])
    teams: dict[str, list] = defaultdict(lambda: [0.0, 0, set()])
    anonymous = 0.0
    for machine_id, total, count in rows:
        machine = machines[machine_id]
        if machine.owner_id in names:
            entry = owners[names[machine.owner_id]]
            entry[0], entry[1] = entry[0] + total, entry[1] + count
            entry[2].add(machine_id)
        else:
            anonymous += total
        if machine.team:
            entry = teams[machine.team]
            entry[0], entry[1] = entry[0] + total, entry[1] + count
            entry[2].add(machine_id)

    def ranked(table: dict[str, list]) -> list[Standing]:
        board = [Standing(name=name, credit=round(c / 3600, 4), units=u, machines=len(ms))
                 for name, (c, u, ms) in table.items()]
        return sorted(board, key=lambda s: (-s.credit, s.name))[:limit]

    total = sum(r[1] for r in rows)
    return VolunteerStandings(owners=ranked(owners), teams=ranked(teams), total_credit=round(total / 3600, 4),
                              total_units=sum(r[2] for r in rows), anonymous_credit=round(anonymous / 3600, 4))


def seconds_of(attempt: RunAttempt) -> int:
    """Whole GPU-seconds from the job's first report to its end."""
    if attempt.started_at is None or attempt.ended_at is None:
        return 0
    return max(0, math.floor((attempt.ended_at - attempt.started_at).total_seconds())) * max(attempt.gpus, 1)
