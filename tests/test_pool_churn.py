"""A pool of two real Ray nodes on loopback that share no disk: work placed on the second node reaches the archive
over HTTP, and when that node is killed mid-run the run resumes on the head from its last shipped checkpoint,
ending with the weights an uninterrupted run has, each kept GPU-second charged once and the lost work not at all.
Run once with the local archive folder and once with an S3 bucket behind a real S3 server process."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from ray.job_submission import JobSubmissionClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from jobs.kinds import job_kind
from scheduler.accounting import work_ended_at
from scheduler.local_ray import start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.archive.service import list_artifacts, read_object, store_for
from service.attempts.service import attempts_of
from service.datasets.service import ensure_bundled
from service.ledger.service import entries_for_run, run_charged
from service.models import AttemptState, Role, Run, RunState
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.live import live_server
from tests.pools import FAST_HEALTH, join_owners_machine, tick_until
from tests.s3 import s3_server

pytestmark = pytest.mark.ray
# The pool test's ports (see test_ray_pool): head 7100+, its workers 7200-7299, dashboard 8100; worker 7400+.
BASE = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 400
PLAN = {**TINY_TRAIN, "steps": 1200, "checkpoint_every": 50, "batch_size": 16, "sample_inference_steps": 4}


def _ended(session: Session, run: Run) -> bool:
    return run.state in (RunState.succeeded, RunState.failed, RunState.cancelled)


@functools.cache
def _reference_weights() -> dict[str, torch.Tensor]:
    """The same plan trained in one go, without Ray, with the thread count a job gets on the pool."""
    out = Path(tempfile.mkdtemp(prefix="obs-reference-")) / "reference"
    subprocess.run([sys.executable, "-m", "jobs.train", "--config", json.dumps(PLAN), "--output", str(out)],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300)
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("store", ["local", "s3"])
def test_work_leaves_the_node_and_survives_its_loss(store: str, tmp_path: Path, lite_engine: Engine,
                                                    lite_session: Session, lite_settings) -> None:
    with ExitStack() as stack:
        s3 = stack.enter_context(s3_server()) if store == "s3" else {}
        served = lite_settings.model_copy(update={**s3, "checkpoint_ship_interval_s": 0.5})
        url = stack.enter_context(live_server(served, lite_engine))
        ensure_bundled(lite_session, store_for(served))  # the bundled set's files in this test's store too
        # The head takes no runs at first, so the pool places the run on the owner's machine that joins.
        settings = served.model_copy(update={"job_python": sys.executable, "job_api_url": url, "run_on_head": False})
        token = secrets.token_hex(16)
        head = start_head(base_port=BASE, dashboard_port=BASE + 1000, token=token, num_cpus=1,
                          temp_dir=Path(tempfile.mkdtemp(prefix="obs-ray-churn-", dir="/tmp")) / "t",
                          loopback_only=False, node_dir=tmp_path / "head-node", env=FAST_HEALTH)
        stack.callback(head.stop)
        client = JobSubmissionClient(head.dashboard_url, headers={"Authorization": f"Bearer {token}"})
        admin, pi, owner = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)
        backend = RayBackend(head.dashboard_url, token)
        machine, worker, worker_id = join_owners_machine(stack, lite_session, head, backend, owner=owner, admin=admin,
                                                         base_port=BASE + 300, folder=tmp_path)
        scheduler = Scheduler(lite_engine, settings, backend)
        call = create_call(lite_session, admin)

        # 1. A run on the second node delivers every output to the archive, digests verified.
        _, delivered = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=TINY_TRAIN))
        run = tick_until(scheduler, lite_engine, delivered.id, _ended)
        assert run.state == RunState.succeeded, run.message
        archive = store_for(settings)
        with Session(lite_engine) as session:
            (attempt,) = attempts_of(session, run.id)
            artifacts = {a.name: a for a in list_artifacts(session, run.id)}
        assert attempt.node_id == worker_id and attempt.machine_id == machine.id
        assert {spec.name for spec in job_kind("train").outputs} <= set(artifacts)
        for artifact in artifacts.values():
            assert hashlib.sha256(read_object(archive, artifact.sha256)).hexdigest() == artifact.sha256
        # The node never saw the archive: its work stayed in its own folder, which it cleared when done.
        assert not list((tmp_path / "worker-node" / "work").iterdir())
        request = client.get_job_info(attempt.submission_id).model_dump_json()
        assert str(settings.resolved_archive_dir) not in request and "secret" not in request.lower()

        # 2. A run whose node is killed after it shipped a checkpoint resumes on the head from that checkpoint.
        _, resumed = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=PLAN))
        tick_until(scheduler, lite_engine, resumed.id,
                    lambda session, run: run.resume_step >= 200 or _ended(session, run))
        scheduler.settings = settings.model_copy(update={"run_on_head": True})
        worker.kill()  # kill -9 of the node's Ray processes and the job with them
        run = tick_until(scheduler, lite_engine, resumed.id, _ended, timeout=300)
        assert run.state == RunState.succeeded, run.message
        with Session(lite_engine) as session:
            first, second, *more = attempts_of(session, run.id)
            entries = entries_for_run(session, run.id)
            charged = {n: run_charged(session, run.id, n) for n in (1, 2)}
            final = {a.name: a for a in list_artifacts(session, run.id)}
        assert more == [] and first.state == AttemptState.lost and first.node_id == worker_id
        assert second.state == AttemptState.succeeded and second.node_id != worker_id
        assert second.resume_step == first.checkpoint_step >= 200
        log = read_object(archive, final["attempt-2.log"].sha256).decode()
        assert f"resumed from step {second.resume_step}" in log
        # Equal weights: the resumed run picked up exactly where the shipped checkpoint left off.
        weights = torch.load(io.BytesIO(read_object(archive, final["checkpoint.pt"].sha256)),
                             map_location="cpu", weights_only=True)["state_dict"]
        reference = _reference_weights()
        assert weights.keys() == reference.keys()
        assert all(torch.equal(weights[k], reference[k]) for k in weights)
        # The ledger: kept seconds charged once (unique keys), the lost attempt only up to its checkpoint.
        assert len({e.key for e in entries}) == len(entries)
        kept_first = int((first.checkpoint_at - first.started_at).total_seconds())
        assert charged[1] == kept_first < int((first.ended_at - first.started_at).total_seconds())
        # The finished attempt is charged up to its job's own end (not the runner's wait to report it afterwards).
        job_ended = work_ended_at(second, second.ended_at)
        assert job_ended <= second.ended_at
        assert charged[2] == int((job_ended - second.started_at).total_seconds())
