"""Two scheduler loops racing over the same queue start each run exactly once (PostgreSQL and SQLite)."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from scheduler.loop import Scheduler
from scheduler.ray_backend import JobRequest, JobSnapshot, JobState
from service.config import Settings
from service.db import make_engine
from service.models import Role, Run, RunState
from tests.factories import award, create_call, create_proposal, create_user


class RecordingBackend:
    """Stands in for Ray and records every submission; shared by both schedulers, like one cluster."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted: Counter[int] = Counter()

    def submit(self, request: JobRequest) -> str:
        with self.lock:
            self.submitted[int(request.metadata["run_id"])] += 1
        return request.submission_id

    def snapshot(self, submission_id: str) -> JobSnapshot:
        return JobSnapshot(JobState.running)

    def logs(self, submission_id: str) -> str:
        return ""

    def nodes(self) -> list[dict]:
        return [{"node_id": "head", "is_head_node": True, "state": "ALIVE", "resources_total": {"CPU": 64}}]


def test_racing_schedulers_start_each_run_once(db_url: str, engine: Engine, session: Session,
                                               settings: Settings) -> None:
    admin = create_user(session, Role.admin)
    call = create_call(session, admin, capacity=1000)
    for _ in range(24):
        award(session, admin, create_proposal(session, create_user(session), call))
    backend = RecordingBackend()
    engines = [make_engine(db_url), make_engine(db_url)]
    schedulers = [Scheduler(e, settings, backend) for e in engines]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def loop(scheduler: Scheduler) -> None:
        try:
            barrier.wait()
            for _ in range(20):
                scheduler.dispatch()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for e in engines:
        e.dispose()
    assert errors == []
    runs = session.exec(select(Run)).all()
    assert len(runs) == 24
    assert all(run.state == RunState.running and run.attempt == 1 for run in runs)
    assert backend.submitted == Counter({run.id: 1 for run in runs})
