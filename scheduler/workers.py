"""More nodes for a run that several nodes train together: once a run in rounds is running, each tick gives it
another attempt (a worker) on each open node that fits it, nodes holding none of its workers first (a node with
room for two, such as a machine with two GPUs, may hold two), up to the plan's `workers`. A node that joins
mid-run so takes part from the next round (the coordinator hands it the newest global weights); a worker lost is
replaced the same way when a node is free.

Each new attempt is numbered by a conditional update of the run's attempt counter, so two schedulers never write
the same one; it is submitted with no transaction open, like every attempt (scheduler.dispatch). A worker a
scheduler wrote and then died before submitting is settled once it is older than the claim time: adopted if Ray has
its job, retired if not, so that it no longer holds a worker's place.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from scheduler.dispatch import Dispatcher
from scheduler.placement import read_facts, run_needs
from scheduler.policy import NodeView
from scheduler.ray_backend import JobState
from service.attempts.service import live_attempts_of, new_attempt
from service.models import AttemptState, Run, RunAttempt, RunState
from service.rounds.service import in_rounds, plan_of, rounds_of
from service.runs.state import move_attempt
from service.timeutil import utcnow

log = logging.getLogger("observatory.scheduler")


def _wanting(session: Session, pool: str) -> list[tuple[int, int, set[str], set[int]]]:
    """(run id, workers wanted, nodes already holding one, worker numbers taken) of the runs in rounds that want
    more workers now."""
    wanting = []
    runs = session.exec(select(Run).where(Run.state == RunState.running, Run.pool == pool, Run.job_kind == "train",
                                          Run.cancel_requested.is_(False), Run.stop_reason.is_(None))).all()
    for run in runs:
        if not in_rounds(run):
            continue
        history = rounds_of(session, run.id)
        if history and history[-1].state == "closed":
            continue  # training is over: only the outputs are left to make
        live = live_attempts_of(session, run.id)
        wanted = plan_of(run).workers
        if len(live) < wanted:
            wanting.append((run.id, wanted, {str(a.node_id) for a in live}, {a.worker for a in live}))
    return wanting


def add_workers(dispatcher: Dispatcher, ray_nodes: list[dict[str, Any]]) -> int:
    """Start a worker on each open node a running run in rounds can use; returns how many started."""
    settings = dispatcher.settings
    with Session(dispatcher.engine, expire_on_commit=False) as session:
        wanting = _wanting(session, settings.pool_name)
        if not wanting:
            return 0
        facts = read_facts(session, settings, ray_nodes, dispatcher.vram)
    gpus, cpus = run_needs(settings, "train")
    started = 0
    for run_id, wanted, hosting, taken in wanting:
        while len(taken) < wanted:
            # Nodes that hold none of its workers first; a node with room for two (two GPUs) may take a second.
            fitting = [n for n in facts.nodes if _fits(n, gpus, cpus)]
            if not fitting:
                break
            node = min(fitting, key=lambda n: (n.node_id in hosting, -n.free_gpus, -n.free_cpus))
            worker = min(set(range(wanted)) - taken)
            if not _start(dispatcher, run_id, node, worker, facts):
                break
            node.free_gpus -= gpus
            node.free_cpus -= cpus
            hosting.add(node.node_id)
            taken.add(worker)
            started += 1
    return started


def settle_stranded(dispatcher: Dispatcher) -> int:
    """Settle added workers still `starting` past the claim time (their scheduler died mid-submission): adopted
    when Ray has their job, retired when not. Returns how many were settled."""
    settings = dispatcher.settings
    cutoff = utcnow() - timedelta(seconds=settings.claim_ttl_s)
    with Session(dispatcher.engine, expire_on_commit=False) as session:
        stranded = session.exec(select(RunAttempt).join(Run, Run.id == RunAttempt.run_id).where(
            RunAttempt.pool == settings.pool_name, RunAttempt.state == AttemptState.starting,
            Run.state == RunState.running, RunAttempt.created_at < cutoff)).all()
    settled = 0
    for attempt in stranded:
        on_pool = dispatcher.backend.snapshot(attempt.submission_id).state != JobState.unknown  # no transaction
        with Session(dispatcher.engine, expire_on_commit=False) as session:
            fresh = session.get(RunAttempt, attempt.id)
            if fresh.state != AttemptState.starting:
                continue
            target = AttemptState.running if on_pool else AttemptState.failed
            move_attempt(session, fresh, target, "adopted: its job is on the pool" if on_pool
                         else "never reached the pool: its scheduler stopped before submitting it")
            session.commit()
            settled += 1
    return settled


def _fits(node: NodeView, gpus: float, cpus: float) -> bool:
    return node.blocked is None and node.free_gpus >= gpus and node.free_cpus >= cpus and (gpus > 0 or cpus > 0)


def _start(dispatcher: Dispatcher, run_id: int, node: NodeView, worker: int, facts: Any) -> bool:
    settings = dispatcher.settings
    with Session(dispatcher.engine, expire_on_commit=False) as session:
        run = session.get(Run, run_id)
        if run is None or run.state != RunState.running or run.cancel_requested or run.stop_reason:
            return False
        number = run.attempt
        counted = session.execute(update(Run).where(Run.id == run_id, Run.attempt == number,
                                                    Run.state == RunState.running)
                                  .values(attempt=number + 1).execution_options(synchronize_session=False))
        if counted.rowcount != 1:
            session.rollback()
            return False  # another scheduler added one meanwhile
        run.attempt = number
        attempt, token = new_attempt(
            session, run, pool=settings.pool_name, node_id=node.node_id, machine_id=facts.machine_of.get(node.node_id),
            charge_factor=min(settings.charge_factor(m) for m in facts.gpu_model_of.get(node.node_id, [None])),
            worker=worker)
        session.commit()
        request = dispatcher.request(run, attempt, token)
    try:
        dispatcher.backend.submit(request)
    except Exception:
        log.exception("submitting worker %s of run %s failed", worker, run_id)
        with Session(dispatcher.engine, expire_on_commit=False) as session:
            move_attempt(session, session.get(RunAttempt, attempt.id), AttemptState.failed, "never reached the pool")
            session.commit()
        return False
    with Session(dispatcher.engine, expire_on_commit=False) as session:
        move_attempt(session, session.get(RunAttempt, attempt.id), AttemptState.running,
                     f"worker {worker} submitted to the pool")
        session.commit()
    log.info("run %s: worker %s submitted as %s", run_id, worker, attempt.submission_id)
    return True
