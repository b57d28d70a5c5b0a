"""The scheduler's reconcile step against a scripted pool: lost jobs resume, failures keep their log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from scheduler.loop import Scheduler
from scheduler.ray_backend import JobRequest, JobSnapshot, JobState
from service.archive.service import list_artifacts
from service.config import Settings
from service.models import Role, Run, RunState
from service.timeutil import utcnow
from tests.factories import award, create_call, create_proposal, create_user


class ScriptedPool:
    def __init__(self) -> None:
        self.snapshots: dict[str, JobSnapshot] = {}
        self.log = ""
        self.submitted: list[str] = []
        self.stopped: list[str] = []

    def submit(self, request: JobRequest) -> str:
        self.submitted.append(request.submission_id)
        self.snapshots[request.submission_id] = JobSnapshot(JobState.pending)
        return request.submission_id

    def snapshot(self, submission_id: str) -> JobSnapshot:
        return self.snapshots.get(submission_id, JobSnapshot(JobState.unknown))

    def logs(self, submission_id: str) -> str:
        return self.log

    def stop(self, submission_id: str) -> None:
        self.stopped.append(submission_id)


@pytest.fixture
def setup(lite_engine: Engine, lite_session: Session, lite_settings: Settings):
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 1
    return scheduler, pool, run.id, lite_engine


def _run(engine: Engine, run_id: int) -> Run:
    with Session(engine) as session:
        return session.get(Run, run_id)


def test_waiting_for_a_gpu_is_not_charged(setup) -> None:
    scheduler, pool, run_id, engine = setup
    scheduler.reconcile()
    run = _run(engine, run_id)
    assert run.state == RunState.running and run.gpu_seconds == 0


def test_a_lost_job_is_requeued_and_resubmitted_under_a_new_attempt(setup) -> None:
    scheduler, pool, run_id, engine = setup
    pool.snapshots.clear()  # the cluster was replaced
    scheduler.reconcile()
    assert _run(engine, run_id).state == RunState.queued
    assert scheduler.dispatch() == 1
    key = _run(engine, run_id).key
    assert pool.submitted == [f"observatory-run-{run_id}-{key}-1", f"observatory-run-{run_id}-{key}-2"]


def test_a_failed_job_keeps_its_log_and_says_why(setup) -> None:
    scheduler, pool, run_id, engine = setup
    submission = pool.submitted[0]
    pool.log = '@@progress {"fraction": 0.5, "step": 1, "total": 2}\nTraceback...\nValueError: bad data\n'
    pool.snapshots[submission] = JobSnapshot(JobState.failed, utcnow(), "exit code 1")
    assert scheduler.reconcile() == 1
    run = _run(engine, run_id)
    assert run.state == RunState.failed and "ValueError: bad data" in run.message and run.progress == 0.5
    with Session(engine) as session:
        assert {a.name for a in list_artifacts(session, run_id)} == {"job.log", "manifest.json"}


def test_a_finished_job_is_charged_up_to_its_end(setup) -> None:
    scheduler, pool, run_id, engine = setup
    submission = pool.submitted[0]
    pool.snapshots[submission] = JobSnapshot(JobState.running)
    scheduler.reconcile()
    with Session(engine) as session:  # as if the job had been running for ten seconds already
        run = session.get(Run, run_id)
        run.charged_until, run.gpu_seconds = utcnow() - timedelta(seconds=10), 0.0
        session.add(run)
        session.commit()
        started = run.charged_until
    pool.snapshots[submission] = JobSnapshot(JobState.stopped, started + timedelta(seconds=7))
    scheduler.reconcile()
    run = _run(engine, run_id)
    assert run.state == RunState.cancelled and run.gpu_seconds == pytest.approx(7, abs=0.5)


def test_a_failed_submission_is_retried_under_the_same_id(lite_engine, lite_session, lite_settings) -> None:
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))

    class FlakyPool(ScriptedPool):
        def submit(self, request: JobRequest) -> str:
            self.submitted.append(request.submission_id)
            if len(self.submitted) == 1:
                raise ConnectionError("the head did not answer")  # it may still have taken the job
            return super().submit(request)

    pool = FlakyPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 0 and _run(lite_engine, run.id).state == RunState.queued
    assert scheduler.dispatch() == 1
    assert pool.submitted[0] == pool.submitted[1] and _run(lite_engine, run.id).attempt == 1
