"""Machines on a real Ray pool: a node without the pool's token cannot join; a revoked machine's run checkpoints and
moves, and the machine gets no new work."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from scheduler.local_ray import ray_env, ray_ports, start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.attempts.service import attempts_of
from service.models import AttemptState, Role, Run, RunState
from service.pool import machines
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.live import live_server
from tests.pools import join_owners_machine, tick_until

pytestmark = pytest.mark.ray
# Clear of the other tests' Ray ports: head 10700-10707, its workers 10800-10899, dashboard 11700; worker 11000+.
BASE = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 4000
LONG = {**TINY_TRAIN, "steps": 1500, "checkpoint_every": 50, "batch_size": 16, "sample_inference_steps": 4}


def _alive(backend: RayBackend) -> list[dict]:
    return [n for n in backend.nodes() if n["state"] == "ALIVE"]


def test_no_token_no_join_and_a_revoked_machine_gets_no_work(tmp_path: Path, lite_engine: Engine,
                                                             lite_session: Session, lite_settings) -> None:
    with ExitStack() as stack:
        token = secrets.token_hex(16)
        head = start_head(base_port=BASE, dashboard_port=BASE + 1000, token=token, num_cpus=1,
                          temp_dir=Path(tempfile.mkdtemp(prefix="obs-ray-join-", dir="/tmp")) / "t",
                          loopback_only=False, node_dir=tmp_path / "head-node")
        stack.callback(head.stop)
        backend = RayBackend(head.dashboard_url, token)

        # 1. `ray start` without the token is refused, and the pool still has its head alone.
        env = {k: v for k, v in ray_env(token).items() if k != "RAY_AUTH_TOKEN"}
        ports = {k: v for k, v in ray_ports(BASE + 600).items() if k not in ("port", "ray-client-server-port")}
        refused = subprocess.run(
            [str(Path(sys.executable).with_name("ray")), "start", "--address", head.gcs_address,
             "--node-ip-address", "127.0.0.1", "--num-cpus", "1", *[f"--{k}={v}" for k, v in ports.items()]],
            env=env, capture_output=True, text=True, timeout=180)
        assert refused.returncode != 0
        assert "authentication" in (refused.stdout + refused.stderr).lower(), refused.stderr[-2000:]
        assert len(_alive(backend)) == 1

        # 2. A registered machine joins with its labels and takes the run; the head takes none here.
        served = lite_settings.model_copy(update={"checkpoint_ship_interval_s": 0.5})
        url = stack.enter_context(live_server(served, lite_engine))
        settings = served.model_copy(update={"job_python": sys.executable, "job_api_url": url,
                                             "run_on_head": False})
        admin, pi, owner = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)
        machine, _, _ = join_owners_machine(stack, lite_session, head, backend, owner=owner, admin=admin,
                                            base_port=BASE + 300, folder=tmp_path)
        scheduler = Scheduler(lite_engine, settings, backend)
        call = create_call(lite_session, admin)
        _, moved = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=LONG))
        tick_until(scheduler, lite_engine, moved.id, lambda s, run: run.resume_step >= 100)

        # 3. Revoked, its run checkpoints and goes back to the queue; nothing new is placed on it.
        machines.revoke(lite_session, admin, machine.id, message="the owner asked us to, by mail")
        lite_session.commit()
        run = tick_until(scheduler, lite_engine, moved.id, lambda s, run: run.state == RunState.queued, timeout=120)
        assert run.stop_reason is None and run.resume_step >= 100
        _, fresh = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=TINY_TRAIN))
        for _ in range(10):
            scheduler.tick()
            time.sleep(0.3)
        with Session(lite_engine) as session:
            (first,) = attempts_of(session, moved.id)
            assert first.state == AttemptState.stopped and first.machine_id == machine.id
            assert first.checkpoint_step == session.get(Run, moved.id).resume_step
            for run_id in (moved.id, fresh.id):
                run = session.get(Run, run_id)
                assert run.state == RunState.queued and run.message == "waiting: no node that takes work is online"
            assert attempts_of(session, fresh.id) == []

        # 4. Reinstated, it takes work again, and the moved run resumes from its checkpoint and finishes.
        machines.decide(lite_session, admin, machine.id, approve=True)
        lite_session.commit()
        run = tick_until(scheduler, lite_engine, moved.id, lambda s, run: run.state in (
            RunState.succeeded, RunState.failed, RunState.cancelled), timeout=300)
        assert run.state == RunState.succeeded, run.message
        with Session(lite_engine) as session:
            _, second = attempts_of(session, moved.id)
            assert second.resume_step == first.checkpoint_step and second.machine_id == machine.id
