"""What the placement policy needs, read in one short transaction: the queue, the awards' standing, and the pool's
nodes as Ray reports them joined with the machines they belong to and the attempts already on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, select

from jobs.config import estimated_vram_gb, parse_job_plan
from jobs.kinds import KINDS
from scheduler.policy import NodeView, QueuedRun, Share
from service.archive import storage
from service.config import Settings
from service.ledger.service import award_standings
from service.models import Award, Call, Machine, MachineState, Proposal, Run, RunAttempt, RunState
from service.pool.standing import MACHINE_LABEL, day_start, hours_on
from service.runs.state import LIVE_ATTEMPT
from service.timeutil import utcnow
from service.volunteers import units


@dataclass
class PoolFacts:
    queue: list[QueuedRun]
    shares: dict[int, Share]
    nodes: list[NodeView]
    machine_of: dict[str, int | None]  # Ray node id -> machine id (None: the operator's head)
    gpu_model_of: dict[str, list[str | None]]  # Ray node id -> its GPU models to charge by (None: no GPU)
    checks: dict[int, dict[str, Any]] = field(default_factory=dict)  # run id -> the segment its next copy re-runs
    held: dict[int, str] = field(default_factory=dict)  # run id -> why it is not placed (its storage quota)


class VramCache:
    """Each run's estimated GPU memory, worked out from its plan once."""

    def __init__(self) -> None:
        self.known: dict[int, float] = {}

    def of(self, run_id: int, plan: dict[str, Any]) -> float:
        if run_id not in self.known:
            try:
                self.known[run_id] = estimated_vram_gb(parse_job_plan(plan))
            except ValueError:
                self.known[run_id] = 0.0  # a bad plan fails at dispatch with its own message
        return self.known[run_id]


def run_needs(settings: Settings, kind: str | None = None) -> tuple[int, float]:
    """(GPUs, CPUs) a run of this pool asks Ray for: GPU runs ask for GPUs alone; a kind that uses no GPU (an
    ingest) asks for one CPU."""
    if kind in KINDS and not KINDS[kind].uses_gpu:
        return 0, 1.0
    gpus = settings.gpus_per_run
    return gpus, 0.0 if gpus else float(settings.cpus_per_run)


def _needs(settings: Settings, run_id: int, plan: dict[str, Any], vram: VramCache) -> tuple[int, float, float]:
    """(GPUs, CPUs, GPU memory in GB) a queued run needs."""
    gpus, cpus = run_needs(settings, str(plan.get("kind", "")))
    return gpus, cpus, vram.of(run_id, plan) if gpus else 0.0


def _nodes_at_once(plan: dict[str, Any]) -> int:
    """The nodes a run needs free at once to start: a run trained by several nodes waits for its min_workers."""
    if plan.get("kind") != "train" or int(plan.get("workers") or 1) <= 1:
        return 1
    return max(1, int(plan.get("min_workers") or 1))


def read_facts(session: Session, settings: Settings, ray_nodes: list[dict[str, Any]], vram: VramCache) -> PoolFacts:
    now = utcnow()
    claimable = (Run.state == RunState.queued) & or_(Run.claim_token.is_(None), Run.claim_expires_at < now)
    rows = session.exec(select(Run.id, Run.award_id, Run.job_plan, Award.priority)
                        .join(Award, Award.id == Run.award_id).where(claimable)).all()
    waiting_room = storage.over_quota(session, list(session.exec(
        select(Run).join(Proposal, Proposal.id == Run.proposal_id).join(Call, Call.id == Proposal.call_id)
        .where(claimable, Call.storage_quota_gb.is_not(None))).all()))
    queue = [QueuedRun(run_id, award_id, str(priority), *_needs(settings, run_id, plan, vram),
                       nodes=_nodes_at_once(plan), volunteer_ok=units.volunteer_ok(plan))
             for run_id, award_id, plan, priority in rows if run_id not in waiting_room]
    wanted = units.copies_wanted(session)
    priorities = dict(session.exec(select(Award.id, Award.priority).where(
        Award.id.in_({one.run.award_id for one in wanted}))).all()) if wanted else {}
    queue += [QueuedRun(run.id, run.award_id, str(priorities.get(run.award_id, "B")),
                        *_needs(settings, run.id, run.job_plan, vram), volunteer_ok=True, replica=True, avoid=avoid)
              for run, avoid, _ in wanted]
    checks = {run.id: check for run, _, check in wanted if check is not None}
    standings = award_standings(session, sorted({r.award_id for r in queue}))
    shares = {award_id: Share(*standing) for award_id, standing in standings.items()}
    machines = {m.id: m for m in session.exec(select(Machine).where(Machine.state != MachineState.rejected))}
    capped = [m.id for m in machines.values() if m.hours_per_day is not None]
    today = hours_on(session, capped, since=day_start(now), now=now) if capped else {}
    used: dict[str, list[float]] = {}  # node -> [GPUs, CPUs] its live attempts hold
    for node_id, kind in session.exec(select(RunAttempt.node_id, Run.job_kind).join(Run, Run.id == RunAttempt.run_id)
                                      .where(RunAttempt.pool == settings.pool_name,
                                             RunAttempt.state.in_(LIVE_ATTEMPT))).all():
        gpus, cpus = run_needs(settings, kind)
        held = used.setdefault(str(node_id), [0.0, 0.0])
        held[0], held[1] = held[0] + gpus, held[1] + cpus
    nodes, machine_of, gpu_model_of = [], {}, {}
    for raw in ray_nodes:
        if raw.get("state") != "ALIVE":
            continue
        node_id = str(raw["node_id"])
        total = raw.get("resources_total") or {}
        label = str((raw.get("labels") or {}).get(MACHINE_LABEL, ""))
        machine = machines.get(int(label)) if label.isdigit() else None
        held_gpus, held_cpus = used.get(node_id, (0.0, 0.0))
        view = NodeView(node_id, float(total.get("GPU", 0)) - held_gpus,
                        float(total.get("CPU", 0)) - held_cpus,
                        vram_gb=machine.vram_gb if machine else 0.0, machine_id=machine.id if machine else None)
        view.blocked = _why_blocked(raw, machine, label, today, settings)
        nodes.append(view)
        machine_of[node_id] = view.machine_id
        gpu_model_of[node_id] = ([machine.gpu_model, machine.first_gpu_model] if machine and machine.gpu_flag
                                 else [machine.gpu_model if machine and machine.gpu_count else None])
    for machine in units.online_agents(session):  # volunteers' agents: nodes of the same policy, outside Ray
        node_id = units.agent_node_id(machine.id)
        view = NodeView(node_id, float(machine.gpu_count), float(machine.cpus), vram_gb=machine.vram_gb,
                        machine_id=machine.id, volunteer=True)
        view.blocked = _why_blocked({}, machine, str(machine.id), today, settings) or (
            "busy with a unit" if units.unit_for(session, machine) is not None else None)
        nodes.append(view)
        machine_of[node_id] = machine.id
        gpu_model_of[node_id] = [machine.gpu_model if machine.gpu_count else None]
    return PoolFacts(queue, shares, nodes, machine_of, gpu_model_of, checks, waiting_room)


def _why_blocked(raw: dict[str, Any], machine: Machine | None, label: str, today: dict[int, float],
                 settings: Settings) -> str | None:
    if machine is None:
        if raw.get("is_head_node") and not label:
            return None if settings.run_on_head else "the head takes no runs here"
        return "not a registered machine"
    if machine.state != MachineState.approved:
        return f"machine {machine.id} is {machine.state}"
    if machine.paused:
        return f"machine {machine.id} is paused by its owner"
    if machine.draining:
        return f"machine {machine.id} is draining"
    if machine.hours_per_day is not None and today.get(machine.id, 0.0) >= machine.hours_per_day:
        return f"machine {machine.id} ran its {machine.hours_per_day:g} hours today"
    return None
