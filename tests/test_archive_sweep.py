"""The job channel's uploads are bounded and what they replace leaves the archive: a checkpoint at most twice per
ship interval, each output sent a bounded number of times, and the sweep deletes every object nothing refers to
(once it is older than the grace), keeping what runs, models and datasets name."""

from __future__ import annotations

import hashlib
import os
import time

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from jobs.kinds import job_kind
from scheduler.loop import Scheduler
from service.archive.service import list_artifacts, record, store_for
from service.archive.sweep import referenced, sweep
from service.attempts.channel import SENDS_PER_OUTPUT
from service.models import RunAttempt
from tests.factories import award, create_call, create_proposal, create_user
from tests.pools import FakeJob, ScriptedPool
from web.app import create_app


def _archive_bytes(store) -> int:  # type: ignore[no-untyped-def]
    return sum(size for _, size, _ in store.objects())


def _upload(job: FakeJob, checkpoints: list[bytes], metrics: list[bytes]) -> None:
    job.start()
    for step, data in enumerate(checkpoints, start=1):
        assert job.checkpoint(data, step=step * 10).status_code == 200
    for data in metrics:
        assert job.output("metrics.json", data).status_code == 201


def test_replaced_checkpoints_and_outputs_are_swept_and_what_is_named_stays(lite_engine, lite_session,
                                                                            lite_settings) -> None:
    """The attack measured: ten checkpoints of 64 KiB and an output sent three times grew the archive by all of
    them; after the sweep, only the last checkpoint and the output as last sent remain of the run's uploads."""
    from service.models import Role

    settings = lite_settings.model_copy(update={"checkpoint_ship_interval_s": 0})
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    pool = ScriptedPool()
    assert Scheduler(lite_engine, settings, pool).dispatch() == 1
    store = store_for(settings)
    checkpoints = [os.urandom(64 << 10) for _ in range(10)]
    metrics = [os.urandom(64 << 10) for _ in range(SENDS_PER_OUTPUT)]
    before = _archive_bytes(store)
    with TestClient(create_app(settings, lite_engine)) as client:
        _upload(FakeJob(client, pool.token()), checkpoints, metrics)
    grown = _archive_bytes(store) - before
    assert grown >= 13 * (64 << 10)
    with Session(lite_engine) as session:
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)).one()
        assert attempt.uploaded_bytes == 13 * (64 << 10) and attempt.output_sends == SENDS_PER_OUTPUT
        kept = referenced(session)
        young = sweep(session, store, grace_s=3600)  # everything is younger than the grace: nothing goes
        assert young.deleted == 0
        report = sweep(session, store, grace_s=60, now=time.time() + 120)
    assert report.deleted == 11 and report.freed_bytes == 11 * (64 << 10)
    assert _archive_bytes(store) - before == 2 * (64 << 10)
    last_checkpoint = hashlib.sha256(checkpoints[-1]).hexdigest()
    last_metrics = hashlib.sha256(metrics[-1]).hexdigest()
    assert store.exists(last_checkpoint) and store.exists(last_metrics) and last_checkpoint in kept
    with Session(lite_engine) as session:  # the bundled dataset's files, named by its version, are all there
        from service.models import DatasetVersion

        for version in session.exec(select(DatasetVersion)):
            assert all(store.exists(f["sha256"]) for f in version.files.values())


def test_an_attempt_sends_each_output_a_bounded_number_of_times_and_checkpoints_at_a_bounded_rate(
        lite_engine, lite_session, lite_settings, lite_client) -> None:
    from service.models import Role

    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    pool = ScriptedPool()
    assert Scheduler(lite_engine, lite_settings, pool).dispatch() == 1  # a ship interval of 60 s
    job = FakeJob(lite_client, pool.token())
    job.start()
    assert job.checkpoint(b"state 1", step=1).status_code == 200
    again = job.checkpoint(b"state 2", step=2)
    assert again.status_code == 429 and int(again.headers["Retry-After"]) == 30
    allowed = SENDS_PER_OUTPUT * len(job_kind("train").outputs)
    for number in range(allowed):
        assert job.output("metrics.json", f"{{\"n\": {number}}}".encode()).status_code == 201
    refused = job.output("metrics.json", b"{}")
    assert refused.status_code == 409 and f"sent {allowed} outputs" in refused.json()["detail"]


def test_an_artifact_may_be_larger_than_2_gib(session, engine) -> None:
    """On PostgreSQL the size was a 32-bit integer: an 8 GiB output (the limit) could not be recorded."""
    from service.models import Role

    admin = create_user(session, Role.admin)
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin)))
    spec = job_kind("train").spec("checkpoint.pt")
    record(session, run, spec, "ab" * 32, 8 << 30)
    session.commit()
    with Session(engine) as other:
        assert [a.size for a in list_artifacts(other, run.id)] == [8 << 30]
