"""How machines stand: online, busy or offline from what Ray reports; hours of work run on each; the public page.

Hours are wall-clock hours of run attempts on the machine, from the moment its job first reported to its end.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timedelta

from sqlmodel import Session, select

from service.models import Machine, MachineState, PoolNode, RunAttempt, User
from service.pool.schemas import MachinePublic, PublicMachine, PublicPool
from service.runs.state import LIVE_ATTEMPT
from service.timeutil import utcnow
from service.volunteers import credit
from service.volunteers.units import ONLINE_S

MACHINE_LABEL = "observatory-machine"  # the Ray label that ties a node to its registered machine


def labels_for(machine: Machine) -> dict[str, str]:
    """The Ray labels a joining machine declares, all from its measurement (Ray label values: 63 characters of
    letters, digits, '-', '_' and '.')."""
    labels = {MACHINE_LABEL: str(machine.id), "observatory-gpu": _label_value(machine.gpu_model or "cpu"),
              "observatory-gpus": str(machine.gpu_count), "observatory-vram-gb": f"{machine.vram_gb:g}"}
    if machine.cuda_capability:
        labels["observatory-cuda"] = machine.cuda_capability
    if machine.release:
        labels["observatory-release"] = _label_value(machine.release)
    return labels


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")[:63] or "unknown"


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def hours_on(session: Session, machine_ids: list[int] | None = None, since: datetime | None = None,
             now: datetime | None = None) -> dict[int, float]:
    """Hours of attempts on each machine (all, or those in `machine_ids`) since `since` (or ever)."""
    now = now or utcnow()
    query = select(RunAttempt.machine_id, RunAttempt.started_at, RunAttempt.ended_at).where(
        RunAttempt.machine_id.is_not(None), RunAttempt.started_at.is_not(None))
    if machine_ids is not None:
        query = query.where(RunAttempt.machine_id.in_(machine_ids))
    if since is not None:
        query = query.where((RunAttempt.ended_at.is_(None)) | (RunAttempt.ended_at > since))
    hours: dict[int, float] = defaultdict(float)
    for machine_id, started, ended in session.exec(query):
        start = max(started, since) if since else started
        span = ((ended or now) - start).total_seconds()
        hours[machine_id] += max(0.0, span) / 3600
    return hours


def online_nodes(session: Session) -> dict[int, PoolNode]:
    """Registered machines online now, by machine id, as the scheduler last saw Ray's nodes."""
    found: dict[int, PoolNode] = {}
    for node in session.exec(select(PoolNode).where(PoolNode.alive)):
        value = str(node.labels.get(MACHINE_LABEL, ""))
        if value.isdigit():
            found[int(value)] = node
    return found


def describe(session: Session, machines: list[Machine]) -> list[MachinePublic]:
    ids = [m.id for m in machines]
    if not ids:
        return []
    now = utcnow()
    online = online_nodes(session)
    total, today = hours_on(session, ids, now=now), hours_on(session, ids, since=day_start(now), now=now)
    attempts = session.exec(select(RunAttempt.machine_id, RunAttempt.run_id, RunAttempt.state).where(
        RunAttempt.machine_id.in_(ids), RunAttempt.started_at.is_not(None))).all()
    owners = {u.id: u.name for u in session.exec(select(User).where(User.id.in_({m.owner_id for m in machines})))}
    runs: dict[int, set[int]] = defaultdict(set)
    busy: set[int] = set()
    for machine_id, run_id, state in attempts:
        runs[machine_id].add(run_id)
        if state in LIVE_ATTEMPT:
            busy.add(machine_id)
    earned = credit.of_machines(session, [m.id for m in machines if m.volunteer])
    out = []
    for machine in machines:
        node = online.get(machine.id)
        up = node is not None or (machine.volunteer and (machine.id in busy or machine.last_contact_at is not None
                                  and (now - machine.last_contact_at).total_seconds() < ONLINE_S))
        status = "offline" if not up else "busy" if machine.id in busy else "online"
        out.append(MachinePublic.model_validate({
            **machine.model_dump(), "owner_name": owners.get(machine.owner_id, ""), "status": status,
            "labels": {k: str(v) for k, v in (node.labels if node else {}).items()},
            "hours_contributed": round(total.get(machine.id, 0.0), 3),
            "hours_today": round(today.get(machine.id, 0.0), 3), "runs_served": len(runs[machine.id]),
            "credit_hours": earned.get(machine.id, (0.0, 0))[0], "units_validated": earned.get(machine.id, (0, 0))[1]}))
    return out


def public_pool(session: Session) -> PublicPool:
    """The pool's figures, as every page shows them: the nodes online (owners' machines and the observatory's
    own), their GPUs and CPUs, the hours delivered this week, owners who chose a name."""
    now = utcnow()
    online = online_nodes(session)
    machines = {m.id: m for m in session.exec(select(Machine).where(Machine.state == MachineState.approved))}
    owners = {u.id: u.name for u in session.exec(select(User).where(
        User.id.in_([m.owner_id for m in machines.values() if m.show_owner])))}
    live = [machines[i] for i in online if i in machines]
    alive = list(session.exec(select(PoolNode).where(PoolNode.alive)))
    return PublicPool(
        nodes_online=len(alive), machines_online=len(live),
        gpus_online=round(sum(float(n.resources.get("GPU", 0)) for n in alive)),
        vram_gb_online=sum(m.vram_gb * m.gpu_count for m in live),
        cpus_online=sum(float(n.resources.get("CPU", 0)) for n in alive),
        hours_this_week=round(sum(hours_on(session, since=now - timedelta(days=7), now=now).values()), 2),
        machines_registered=len(machines),
        named_owners=sorted(set(owners.values())),
        online=[PublicMachine(gpu_model=m.gpu_model, gpu_count=m.gpu_count, vram_gb=m.vram_gb,
                              owner=owners.get(m.owner_id) if m.show_owner else None) for m in live])
