"""The job channel: a job on a pool node fetches its inputs and sends its log, checkpoints and outputs over HTTP with
a token scoped to its attempt; the observatory takes only declared, verified files, and the run succeeds only when
every required output is in the archive."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from scheduler.loop import Scheduler
from scheduler.ray_backend import JobState
from service.archive.service import list_artifacts, read_object, store_for
from service.models import Role, Run, RunEvent, RunState
from tests.factories import archive_outputs, auth_headers, award, create_call, create_proposal, create_user
from tests.pools import TRAIN_FILES, FakeJob, ScriptedPool, current_run, dispatched_run


@pytest.fixture
def world(lite_engine: Engine, lite_session: Session, lite_settings, lite_client: TestClient):
    scheduler, pool, run_id, _ = dispatched_run(lite_engine, lite_session, lite_settings)
    return scheduler, pool, run_id, FakeJob(lite_client, pool.token())


def test_outputs_arrive_over_the_channel_and_the_run_succeeds(world, lite_engine, lite_settings) -> None:
    scheduler, pool, run_id, job = world
    plan = job.start()
    assert plan.status_code == 200, plan.text
    assert plan.json()["kind"] == "train" and plan.json()["resume_sha256"] is None
    job.log("training\n", {"step": 1, "total": 2, "fraction": 0.5})
    pool.set(pool.submitted[0], JobState.running)
    scheduler.reconcile()
    assert current_run(lite_engine, run_id).progress == 0.5
    job.outputs(TRAIN_FILES)
    job.log("done\n")
    assert job.end(0).status_code == 204
    pool.set(pool.submitted[0], JobState.succeeded)
    assert scheduler.reconcile() == 1
    run = current_run(lite_engine, run_id)
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
    # The release its node ran is kept, and the run's landing page names it as the code that made the outputs.
    from jobs.version import installed_version

    product = job.client.get(f"/api/archive/runs/{run_id}").json()
    assert product["code_version"] == installed_version() and product["identifier"] == f"obs:run/{run_id}"


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
    run = current_run(lite_engine, run_id)
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
    assert current_run(lite_engine, run_id).state == RunState.failed
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
    failed = current_run(lite_engine, run.id)
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


@pytest.mark.parametrize("signed_links", [True, False])
def test_inputs_in_a_bucket_come_by_signed_link_or_through_the_service(signed_links: bool, lite_engine, lite_session,
                                                                       lite_settings) -> None:
    """A bucket the nodes reach hands them a short-lived signed link; one that only the service reaches
    (OBSERVATORY_S3_SIGNED_LINKS=false) is streamed by the service, so that a job never needs the bucket."""
    from service.datasets.service import ensure_bundled
    from tests.s3 import s3_server
    from web.app import create_app

    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    with s3_server() as s3:
        settings = lite_settings.model_copy(update={**s3, "s3_signed_links": signed_links})
        ensure_bundled(lite_session, store_for(settings))  # the bundled set's files in this bucket too
        _, trained = award(lite_session, admin, create_proposal(lite_session, pi, call))
        archive_outputs(lite_session, settings, lite_session.get(Run, trained.id), TRAIN_FILES)
        checkpoint = hashlib.sha256(TRAIN_FILES["checkpoint.pt"]).hexdigest()
        award(lite_session, admin, create_proposal(lite_session, pi, call,
                                                   job_plan={"kind": "sample", "checkpoint_sha256": checkpoint}))
        pool = ScriptedPool()
        assert Scheduler(lite_engine, settings, pool).dispatch() == 2
        with TestClient(create_app(settings, lite_engine)) as client:
            job = FakeJob(client, next(r.env["OBSERVATORY_JOB_TOKEN"] for r in pool.requests
                                       if r.metadata["run_id"] != str(trained.id)))
            assert job.start().status_code == 200
            fetched = client.get(f"/api/job/inputs/{checkpoint}", headers=job.headers, follow_redirects=False)
    if signed_links:
        assert fetched.status_code == 307 and fetched.headers["location"].startswith(s3["s3_endpoint_url"])
        assert "Signature" in fetched.headers["location"]
    else:
        assert fetched.status_code == 200 and fetched.content == TRAIN_FILES["checkpoint.pt"]
        assert fetched.headers["x-content-sha256"] == checkpoint


def test_the_runner_sends_only_what_it_may_and_the_run_says_what_is_missing(world, lite_engine, lite_settings,
                                                                          tmp_path) -> None:
    """The runner's real upload path over real HTTP: a link planted in the work folder (to the portal's secret) and
    files the kind does not allow never leave the node, and the run fails naming the output that is missing."""
    import os

    from jobs.kinds import job_kind
    from jobs.outputs import declare
    from jobs.runner import Attempt, Channel
    from tests.live import live_server

    scheduler, pool, run_id, job = world
    secret = tmp_path / "secret_key"
    secret.write_text("the portal's session key")
    work = tmp_path / "work"
    work.mkdir()
    for name, data in {**TRAIN_FILES, "notes.txt": b"undeclared"}.items():
        (work / name).write_bytes(data)
    declare(work, job_kind("train").outputs)
    (work / "samples.png").unlink()
    os.symlink(secret, work / "samples.png")
    with live_server(lite_settings, lite_engine) as url:
        runner = Attempt(Channel(url, pool.token(), patience_s=0), tmp_path / "node")
        problems = runner.send_outputs(work, "train")
        runner.channel.call("POST", "/api/job/end", json={"exit_code": 0, "problems": problems})
    assert any(p.startswith("samples.png") for p in problems) and len(problems) == 1
    pool.set(pool.submitted[0], JobState.succeeded)
    scheduler.reconcile()
    run = current_run(lite_engine, run_id)
    assert run.state == RunState.failed and "samples.png" in run.message
    with Session(lite_engine) as session:
        names = {a.name for a in list_artifacts(session, run_id)}
        blobs = [read_object(store_for(lite_settings), a.sha256) for a in list_artifacts(session, run_id)]
    assert "samples.png" not in names and "notes.txt" not in names
    assert secret.read_bytes() not in blobs


def test_an_archive_that_refuses_a_checkpoint_answers_503_and_the_runner_tries_again(world, lite_engine,
                                                                                     lite_settings, monkeypatch,
                                                                                     tmp_path) -> None:
    from jobs.runner import Attempt, Channel, Unreachable
    from service.archive.store import LocalStore
    from tests.live import live_server

    scheduler, pool, run_id, job = world
    job.start()

    def full(self, stream, *, limit=None):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalStore, "put", full)
    answer = job.checkpoint(b"state", step=10)
    assert answer.status_code == 503 and "No space left on device" in answer.json()["detail"]
    assert int(answer.headers["Retry-After"]) > 0
    # The runner tries again for as long as its patience (here: a fraction of a second), then says why.
    work = tmp_path / "work"
    work.mkdir()
    (work / "state.pt").write_bytes(b"state")
    with live_server(lite_settings, lite_engine) as url:
        runner = Attempt(Channel(url, pool.token(), patience_s=0.3, backoff_s=(0.1,)), tmp_path / "node")
        runner.interval_s = 0
        runner.output.checkpoint_step = 10
        with pytest.raises(Unreachable, match="503 the archive could not store the checkpoint"):
            runner.ship_checkpoint(work, force=True)
        assert runner.channel.tries("archive") >= 2


def test_progress_is_held_to_the_plan_and_non_finite_numbers_are_dropped(engine, session, settings,
                                                                          client) -> None:
    """A job may claim step 10⁹ of a two-step plan, or a NaN loss: the run shows the plan's last step at most, and
    nothing that JSON (PostgreSQL's above all) cannot store."""
    scheduler, pool, run_id, _ = dispatched_run(engine, session, settings)
    job = FakeJob(client, pool.token())
    job.start()
    line = {"step": 10**9, "total": 10**9, "fraction": 5.0, "loss": float("nan"), "loss_step": -4,
            "detail": {"lr": float("inf"), "seen": [1.0, float("-inf")]}}
    body = json.dumps({"offset": 0, "text": "", "progress": line})  # NaN and Infinity, as Python writes them
    answer = client.post("/api/job/log", content=body, headers={**job.headers, "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    run = current_run(engine, run_id)
    steps = run.job_plan["steps"]
    assert run.progress_detail["step"] == steps and run.progress_detail["total"] == steps
    assert run.progress_detail["loss_step"] == 0 and "loss" not in run.progress_detail
    assert run.progress_detail["detail"] == {"seen": [1.0]} and run.progress == 1.0


def test_the_run_log_shows_lines_past_many_progress_records_and_follows_by_offset(world, lite_client,
                                                                                  lite_session) -> None:
    _, _, run_id, job = world
    assert job.start().status_code == 200
    admin = auth_headers(lite_session, create_user(lite_session, Role.admin))
    job.log("training on cpu\n")
    for step in range(1, 41):  # a job reports progress far more often than it says anything
        job.log(f"@@progress {json.dumps({'step': step, 'total': 900, 'fraction': step / 900})}\n")
    first = lite_client.get(f"/api/runs/{run_id}/log", headers=admin).json()
    assert first["lines"] == ["training on cpu"] and first["attempt"] == 1 and first["offset"] == job.offset
    job.log("step 90 of 900, loss 0.0412\n")
    since = lite_client.get(f"/api/runs/{run_id}/log", params={"after": first["offset"], "attempt": 1},
                            headers=admin).json()
    assert since["lines"] == ["step 90 of 900, loss 0.0412"] and since["offset"] == job.offset
    assert lite_client.get(f"/api/runs/{run_id}/log", params={"after": since["offset"], "attempt": 1},
                           headers=admin).json()["lines"] == []
    # An offset from another attempt's log counts for nothing: the answer starts from this one's beginning.
    other = lite_client.get(f"/api/runs/{run_id}/log", params={"after": since["offset"], "attempt": 7},
                            headers=admin).json()
    assert other["lines"] == ["training on cpu", "step 90 of 900, loss 0.0412"]
    assert lite_client.get(f"/api/runs/{run_id}/log", params={"after": -1}, headers=admin).status_code == 422


def test_the_attempt_is_found_without_holding_the_database_into_the_route(lite_engine: Engine,
                                                                          lite_session: Session,
                                                                          lite_settings) -> None:  # noqa: ANN001
    """The job channel's token check runs in one worker thread and its route in another: it must hand its
    connection (and, for a call that writes, SQLite's write lock) back between them, or a portal whose threads all
    wait for that lock would have none left to run the route that holds it."""
    from starlette.requests import Request

    from service.attempts.api import get_attempt
    from service.db import writer

    _, pool, run_id, _ = dispatched_run(lite_engine, lite_session, lite_settings)
    request = Request({"type": "http", "method": "POST", "headers": [
        (b"authorization", f"Bearer {pool.token()}".encode())]})
    with Session(writer(lite_engine), expire_on_commit=False) as session:
        attempt = get_attempt(request, session)
        assert attempt.run_id == run_id and not session.in_transaction()
        # Nothing holds the write lock: another writer gets it at once.
        with Session(writer(lite_engine)) as other:
            other.exec(select(Run.id)).all()
