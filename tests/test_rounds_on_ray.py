"""Three workers train one model in rounds on a real Ray pool of two nodes (the head, and an owner's machine on
loopback): the machine is killed (-9) mid-run, the round closes with the others at its timeout and training goes
on; the lost worker is charged only up to its last contribution a round took; a machine that joins mid-run gets a
worker that contributes from the next round; the run finishes with one worker making the outputs."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from scheduler.local_ray import start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.archive.service import list_artifacts, store_for
from service.attempts.service import attempts_of
from service.datasets.service import ensure_bundled
from service.ledger.service import run_charged
from service.models import AttemptState, Role, RunState
from service.rounds.service import rounds_of
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.live import live_server
from tests.pools import FAST_HEALTH, join_owners_machine, tick_until

pytestmark = pytest.mark.ray
# Ports: head 15200+ (with the default base), its workers +100..+199, dashboard +1000; machines +300 and +350.
BASE = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 8500
PLAN = {**TINY_TRAIN, "steps": 480, "batch_size": 16, "sample_inference_steps": 2, "checkpoint_every": 1000,
        "workers": 3, "sync_every": 40, "sync_dtype": "int8", "sync_timeout_s": 4}


def _ended(session: Session, run) -> bool:  # type: ignore[no-untyped-def]
    return run.state in (RunState.succeeded, RunState.failed, RunState.cancelled)


def _closed(session: Session, run_id: int) -> list:  # type: ignore[type-arg]
    return [r for r in rounds_of(session, run_id) if r.state == "closed"]


def test_three_workers_survive_a_killed_node_and_take_in_one_that_joins(tmp_path: Path, lite_engine: Engine,
                                                                       lite_session: Session, lite_settings) -> None:
    with ExitStack() as stack:
        served = lite_settings.model_copy(update={"checkpoint_ship_interval_s": 0.5})
        url = stack.enter_context(live_server(served, lite_engine))
        ensure_bundled(lite_session, store_for(served))
        settings = served.model_copy(update={"job_python": sys.executable, "job_api_url": url})
        token = secrets.token_hex(16)
        head = start_head(base_port=BASE, dashboard_port=BASE + 1000, token=token, num_cpus=2,
                          temp_dir=Path(tempfile.mkdtemp(prefix="obs-ray-rounds-", dir="/tmp")) / "t",
                          loopback_only=False, node_dir=tmp_path / "head-node", env=FAST_HEALTH)
        stack.callback(head.stop)
        backend = RayBackend(head.dashboard_url, token)
        admin, pi, owner = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)
        _, machine_node, machine_id = join_owners_machine(stack, lite_session, head, backend, owner=owner,
                                                          admin=admin, base_port=BASE + 300,
                                                          folder=tmp_path / "first")
        scheduler = Scheduler(lite_engine, settings, backend)
        _, run = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin),
                                                            job_plan=PLAN))
        # 1. Three workers on two nodes (the head has room for two), training in rounds.
        tick_until(scheduler, lite_engine, run.id, lambda session, r: len(_closed(session, r.id)) >= 2 or
                   _ended(session, r), timeout=300)
        with Session(lite_engine) as session:
            workers = attempts_of(session, run.id)
            contributors = {c["worker"] for r in _closed(session, run.id) for c in r.contributors}
        assert len(workers) == 3 and {a.worker for a in workers} == {0, 1, 2}, [
            (a.number, a.worker, a.state, a.node_id, a.message) for a in workers]
        on_machine = next(a for a in workers if a.node_id == machine_id)
        assert contributors == {0, 1, 2}

        # 2. The machine is killed mid-run: the round closes without it, and training goes on.
        machine_node.kill()
        tick_until(scheduler, lite_engine, run.id, lambda session, r: session.get(
            type(on_machine), on_machine.id).state == AttemptState.lost or _ended(session, r), timeout=120)
        with Session(lite_engine) as session:
            before = len(_closed(session, run.id))
        tick_until(scheduler, lite_engine, run.id, lambda session, r: len(_closed(session, r.id)) >= before + 1
                   or _ended(session, r), timeout=120)

        # 3. Another machine joins mid-run: it gets the lost worker's place and contributes from the next round.
        join_owners_machine(stack, lite_session, head, backend, owner=owner, admin=admin, base_port=BASE + 350,
                            folder=tmp_path / "second")
        tick_until(scheduler, lite_engine, run.id, lambda session, r: any(
            c["attempt"] > 3 for round_ in _closed(session, r.id) for c in round_.contributors) or _ended(session, r),
                   timeout=240)
        run = tick_until(scheduler, lite_engine, run.id, _ended, timeout=300)
        assert run.state == RunState.succeeded, run.message
        tick_until(scheduler, lite_engine, run.id, lambda session, r: all(
            a.state not in (AttemptState.starting, AttemptState.running) for a in attempts_of(session, r.id)),
                   timeout=60)

        with Session(lite_engine) as session:
            attempts = attempts_of(session, run.id)
            history = rounds_of(session, run.id)
            lost = session.get(type(on_machine), on_machine.id)
            charged = run_charged(session, run.id, lost.number)
            artifacts = {a.name for a in list_artifacts(session, run.id)}
        joined = [a for a in attempts if a.number > 3]
        assert joined and joined[0].worker == on_machine.worker and joined[0].node_id not in (machine_id, None)
        first_in = min(r.number for r in history for c in r.contributors if c["attempt"] == joined[0].number)
        assert all(c["attempt"] != joined[0].number for r in history[:first_in] for c in r.contributors)
        # Rounds after the kill and before the join closed with the two workers left (at their timeout).
        killed_round = max(r.number for r in history for c in r.contributors if c["attempt"] == lost.number)
        assert any(len(r.contributors) == 2 for r in history[killed_round + 1:first_in + 1])
        assert history[-1].step + history[-1].steps == PLAN["steps"] and len(history) == PLAN["steps"] // 40
        # The lost worker: charged up to its last contribution taken, never past it.
        assert lost.state == AttemptState.lost and lost.checkpoint_at is not None
        assert charged == int((lost.checkpoint_at - lost.started_at).total_seconds())
        assert charged < int((lost.ended_at - lost.started_at).total_seconds())
        assert {"checkpoint.pt", "samples.png", "metrics.json", "attribution.json"} <= artifacts
        # One worker made the outputs; every other that lived to the end stopped with nothing to send.
        ends = sorted(str(a.state) for a in attempts if a.id != lost.id)
        assert ends == ["stopped"] * (len(attempts) - 2) + ["succeeded"], [(a.number, a.state, a.message)
                                                                            for a in attempts]
