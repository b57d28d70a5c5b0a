"""The job channel: a job on a pool node fetches its inputs and sends its log, checkpoints and outputs over HTTP with
a token scoped to its attempt; the observatory takes only declared, verified files, and the run succeeds only when
every required output is in the archive."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from scheduler.loop import Scheduler
from scheduler.ray_backend import JobState
from service.archive.service import list_artifacts, read_object, store_for
from service.models import Role, Run, RunEvent, RunState
from tests.factories import archive_outputs, auth_headers, award, create_call, create_proposal, create_user
from tests.pools import TRAIN_FILES, FakeJob, ScriptedPool


@pytest.fixture
def world(lite_engine: Engine, lite_session: Session, lite_settings, lite_client: TestClient):
    admin = create_user(lite_session, Role.admin)
    pi = create_user(lite_session)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin)))
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 1
    return scheduler, pool, run.id, FakeJob(lite_client, pool.token())


def _run(engine: Engine, run_id: int) -> Run:
    with Session(engine) as session:
        return session.get(Run, run_id)


def test_outputs_arrive_over_the_channel_and_the_run_succeeds(world, lite_engine, lite_settings) -> None:
    scheduler, pool, run_id, job = world
    plan = job.start()
    assert plan.status_code == 200, plan.text
    assert plan.json()["kind"] == "train" and plan.json()["resume_sha256"] is None
    job.log("training\n", {"step": 1, "total": 2, "fraction": 0.5})
    pool.set(pool.submitted[0], JobState.running)
    scheduler.reconcile()
    assert _run(lite_engine, run_id).progress == 0.5
    job.outputs(TRAIN_FILES)
    job.log("done\n")
    assert job.end(0).status_code == 204
    pool.set(pool.submitted[0], JobState.succeeded)
    assert scheduler.reconcile() == 1
    run = _run(lite_engine, run_id)
    assert run.state == RunState.succeeded and run.progress == 1.0, run.message
    with Session(lite_engine) as session:
        artifacts = {a.name: a for a in list_artifacts(session, run_id)}
        events = [(e.subject, e.from_state, e.to_state) for e in session.exec(
            select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id))]
    assert set(artifacts) == {*TRAIN_FILES, "attempt-1.log", "job.log", "manifest.json"}
    store = store_for(lite_settings)
    for name, data in TRAIN_FILES.items():
        assert artifacts[name].sha256 == hashlib.sha256(data).hexdigest() and artifacts[name].attempt == 1
        assert read_object(store, artifacts[name].sha256) == data
    assert b"training\ndone\n" in read_object(store, artifacts["attempt-1.log"].sha256)
    assert events == [("attempt", "starting", "running"), ("run", "queued", "running"),
                      ("attempt", "running", "succeeded"), ("run", "running", "succeeded")]


def test_undeclared_names_and_wrong_digests_are_refused(world, lite_engine) -> None:
    scheduler, pool, run_id, job = world
    job.start()
    refused = job.output("page.svg", b"<svg onload='alert(1)'/>")
    assert refused.status_code == 422 and "not an output a train job may send" in refused.json()["detail"]
    wrong = job.output("checkpoint.pt", b"weights", sha256="f" * 64)
    assert wrong.status_code == 422 and "not the declared" in wrong.json()["detail"]
    job.output("metrics.json", b"{}")
    job.end(0)
    pool.set(pool.submitted[0], JobState.succeeded)
    scheduler.reconcile()
    run = _run(lite_engine, run_id)
    assert run.state == RunState.failed
    assert "outputs are missing: checkpoint.pt, samples.png, training_images.png, attribution.json" in run.message


def test_the_token_opens_this_attempts_channel_and_nothing_else(world, lite_client, lite_session, lite_engine) -> None:
    scheduler, pool, run_id, job = world
    researcher = auth_headers(lite_session, create_user(lite_session))
    assert lite_client.post("/api/job/start", headers=researcher, json={"node_name": "x", "worker_version": "1"}
                            ).status_code == 401
    assert lite_client.get("/api/me", headers=job.headers).status_code == 401
    assert lite_client.get(f"/api/runs/{run_id}", headers=job.headers).status_code == 401
    job.start()
    job.end(1)
    pool.set(pool.submitted[0], JobState.failed)
    scheduler.reconcile()
    assert _run(lite_engine, run_id).state == RunState.failed
    # The attempt has ended: its token is dead.
    assert job.output("metrics.json", b"{}").status_code == 401
    assert lite_client.post("/api/job/log", headers=job.headers, json={"offset": 0, "text": "x"}).status_code == 401


def test_a_node_on_another_release_is_refused_with_a_clear_message(lite_engine, lite_session, lite_settings) -> None:
    from web.app import create_app

    settings = lite_settings.model_copy(update={"required_worker_version": "9.9.9"})
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, settings, pool)
    scheduler.dispatch()
    with TestClient(create_app(settings, lite_engine)) as client:
        answer = FakeJob(client, pool.token()).start(version="0.0.1")
    assert answer.status_code == 409 and "runs commons-observatory 0.0.1" in answer.json()["detail"]
    assert "needs 9.9.9" in answer.json()["detail"]
    pool.set(pool.submitted[0], JobState.failed, exit_code=3)
    scheduler.reconcile()
    failed = _run(lite_engine, run.id)
    assert failed.state == RunState.failed and "needs 9.9.9" in failed.message


def test_inputs_are_fetched_by_digest_and_only_the_attempts_own(lite_engine, lite_session, lite_settings,
                                                                lite_client) -> None:
    admin = create_user(lite_session, Role.admin)
    pi = create_user(lite_session)
    call = create_call(lite_session, admin)
    _, trained = award(lite_session, admin, create_proposal(lite_session, pi, call))
    archive_outputs(lite_session, lite_settings, lite_session.get(Run, trained.id), TRAIN_FILES)
    checkpoint = hashlib.sha256(TRAIN_FILES["checkpoint.pt"]).hexdigest()
    _, sampling = award(lite_session, admin, create_proposal(
        lite_session, pi, call, job_plan={"kind": "sample", "checkpoint_sha256": checkpoint}))
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 2
    job = FakeJob(lite_client, next(r.env["OBSERVATORY_JOB_TOKEN"] for r in pool.requests
                                    if r.metadata["run_id"] == str(sampling.id)))
    plan = job.start().json()
    assert plan["inputs"] == [{"field": "checkpoint_sha256", "sha256": checkpoint, "size": 7}]
    fetched = lite_client.get(f"/api/job/inputs/{checkpoint}", headers=job.headers)
    assert fetched.status_code == 200 and fetched.content == TRAIN_FILES["checkpoint.pt"]
    samples = hashlib.sha256(TRAIN_FILES["samples.png"]).hexdigest()
    assert lite_client.get(f"/api/job/inputs/{samples}", headers=job.headers).status_code == 404
    assert lite_client.get("/api/job/inputs/..%2F..%2Fsecret_key", headers=job.headers).status_code == 404
