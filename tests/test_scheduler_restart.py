"""The scheduler process is killed (kill -9) mid-run and started again: it adopts the job Ray still runs, starts
no second one, and charges every second once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient
from sqlmodel import Session

from scheduler.accounting import work_ended_at
from service.attempts.service import attempts_of
from service.ledger.service import entries_for_run, run_charged
from service.models import Role, Run, RunState
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.live import live_server

pytestmark = pytest.mark.ray


def _scheduler(env: dict[str, str], log: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("observatory")), "serve", "--no-api"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(engine, run_id: int, until, timeout: float = 180) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as session:
            run = session.get(Run, run_id)
            if until(session, run):
                return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id}: {run.state} {run.message}")


def test_a_killed_scheduler_restarts_without_a_second_job_or_charge(ray_head, tmp_path, lite_engine, lite_session,
                                                                    lite_settings) -> None:
    admin = create_user(lite_session, Role.admin)
    plan = {**TINY_TRAIN, "steps": 1000, "checkpoint_every": 100, "batch_size": 16}
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin), job_plan=plan))
    with live_server(lite_settings, lite_engine) as url:
        env = {**os.environ, "OBSERVATORY_VAR_DIR": str(lite_settings.var_dir),
               "OBSERVATORY_DATABASE_URL": lite_settings.database_url, "OBSERVATORY_SECRET_KEY": "test-secret",
               "OBSERVATORY_RAY_ADDRESS": ray_head.dashboard_url, "OBSERVATORY_RAY_AUTH_TOKEN": ray_head.token,
               "OBSERVATORY_JOB_API_URL": url, "OBSERVATORY_JOB_PYTHON": sys.executable,
               "OBSERVATORY_SCHEDULER_INTERVAL_S": "0.5"}
        log = tmp_path / "scheduler.log"
        first = _scheduler(env, log)
        try:
            _wait(lite_engine, run.id, lambda s, r: r.progress_detail.get("step", 0) >= 100
                  and run_charged(s, r.id) > 0)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        second = _scheduler(env, log)
        try:
            final = _wait(lite_engine, run.id, lambda s, r: r.state in ("succeeded", "failed", "cancelled"))
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
    assert final.state == RunState.succeeded, (final.message, log.read_text()[-3000:])
    client = JobSubmissionClient(ray_head.dashboard_url, headers={"Authorization": f"Bearer {ray_head.token}"})
    jobs = [j for j in client.list_jobs() if (j.metadata or {}).get("run_id") == str(run.id)
            and j.submission_id.startswith(f"observatory-run-{run.id}-{final.key}-")]
    assert len(jobs) == 1
    with Session(lite_engine) as session:
        (attempt,) = attempts_of(session, run.id)
        entries = entries_for_run(session, run.id)
        charged = run_charged(session, run.id)
    assert len({e.key for e in entries}) == len(entries)
    job_ended = work_ended_at(attempt, attempt.ended_at)  # the job's own end, as its runner reported it
    assert job_ended <= attempt.ended_at and charged == int((job_ended - attempt.started_at).total_seconds())
