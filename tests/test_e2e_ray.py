"""The whole observatory loop through the HTTP API, on SQLite, with a real local Ray running the real jobs."""

from __future__ import annotations

import hashlib
import json
import sys
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.config import Settings
from service.models import Role, Run
from tests.factories import TINY_TRAIN, create_user, login, proposal_body, signed_up
from tests.live import live_server

pytestmark = pytest.mark.ray


@pytest.fixture
def scheduler(ray_head, lite_engine: Engine, lite_settings: Settings) -> Scheduler:
    """A scheduler on the session's Ray head; its jobs reach the observatory over HTTP, as on a real pool."""
    served = lite_settings.model_copy(update={"checkpoint_ship_interval_s": 1})
    with live_server(served, lite_engine) as url:
        settings = served.model_copy(update={"job_python": sys.executable, "scheduler_interval_s": 0.5,
                                             "job_api_url": url})
        yield Scheduler(lite_engine, settings, RayBackend(ray_head.dashboard_url, ray_head.token))


def drive(scheduler: Scheduler, engine: Engine, run_id: int, timeout: float = 240) -> Run:
    """Tick the scheduler until the run reaches a final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scheduler.tick()
        with Session(engine) as session:
            run = session.get(Run, run_id)
            if run.state in ("succeeded", "failed", "cancelled"):
                if run.state == "failed":  # what the node printed, for whoever reads the failure
                    print(scheduler.backend.logs(run.submission_id)[-4000:])
                return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def _open_call(client: TestClient, admin_headers: dict) -> int:
    """A Director's Discretionary call, so that its proposals are decided as soon as they are submitted."""
    cycle = client.post("/api/cycles", headers=admin_headers, json={
        "name": "Cycle 1", "capacity_gpu_hours": 100, "director_reserve_gpu_hours": 10})
    assert cycle.status_code == 201, cycle.text
    response = client.post("/api/calls", headers=admin_headers, json={
        "title": "Cycle 1 DD", "kind": "director", "cycle_id": cycle.json()["id"], "opens_at": "2026-01-01T00:00:00Z",
        "closes_at": "2036-01-01T00:00:00Z", "capacity_gpu_hours": 10, "exclusive_months": 12})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _propose_and_award(client, call_id, pi, admin, plan, gpu_hours=1.0) -> int:
    proposal = client.post(f"/api/calls/{call_id}/proposals", headers=pi, json=proposal_body(job_plan=plan))
    assert proposal.status_code == 201, proposal.text
    awarded = client.post(f"/api/proposals/{proposal.json()['id']}/award", headers=admin,
                          json={"gpu_hours": gpu_hours})
    assert awarded.status_code == 201, awarded.text
    runs = client.get(f"/api/proposals/{proposal.json()['id']}/runs", headers=pi).json()
    assert [r["state"] for r in runs] == ["queued"]
    return runs[0]["id"]


def test_call_to_downloads(scheduler, lite_client: TestClient, lite_session: Session, lite_engine) -> None:
    admin = login(lite_client, create_user(lite_session, Role.admin).email)
    pi = signed_up(lite_client, "pi@example.org", "PI", "amber kettle orbit")
    outsider = login(lite_client, create_user(lite_session).email)
    call_id = _open_call(lite_client, admin)

    run_id = _propose_and_award(lite_client, call_id, pi, admin, TINY_TRAIN)
    run = drive(scheduler, lite_engine, run_id)
    assert run.state == "succeeded", run.message
    shown = lite_client.get(f"/api/runs/{run_id}", headers=pi).json()
    assert shown["progress"] == 1.0 and shown["gpu_seconds"] > 0
    assert [a["state"] for a in shown["attempts"]] == ["succeeded"]
    assert sum(a["charged"] for a in shown["attempts"]) == shown["gpu_seconds"]
    ledger = lite_client.get(f"/api/runs/{run_id}/ledger", headers=pi).json()
    assert sum(entry["gpu_seconds"] for entry in ledger) == shown["gpu_seconds"]
    assert shown["progress_detail"]["total"] == TINY_TRAIN["steps"]
    proposal = lite_client.get(f"/api/proposals/{shown['proposal_id']}", headers=pi).json()
    assert proposal["award"]["used_gpu_hours"] == pytest.approx(shown["gpu_seconds"] / 3600)

    listing = lite_client.get(f"/api/runs/{run_id}/artifacts", headers=pi).json()
    names = {a["name"] for a in listing}
    assert {"checkpoint.pt", "samples.png", "job.log", "attempt-1.log", "manifest.json", "attribution.json"} <= names
    downloaded = {}
    for artifact in listing:
        body = lite_client.get(artifact["url"], headers=pi)
        assert body.status_code == 200
        assert hashlib.sha256(body.content).hexdigest() == artifact["sha256"] == body.headers["x-content-sha256"]
        downloaded[artifact["name"]] = body.content
    manifest = json.loads(downloaded["manifest.json"])
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == \
        {a["name"]: a["sha256"] for a in listing if a["name"] != "manifest.json"}
    assert b"@@progress" in downloaded["job.log"]
    page = lite_client.get(f"/runs/{run_id}", headers=pi).text
    assert f'src="/api/runs/{run_id}/artifacts/samples.png"' in page and 'id="loss-chart"' in page
    assert 'id="attempts"' in page and f'href="/api/runs/{run_id}/ledger"' in page

    for headers in (outsider, {}, admin):
        assert lite_client.get(f"/api/runs/{run_id}/artifacts", headers=headers).status_code == 404
        assert lite_client.get(f"/api/runs/{run_id}/artifacts/checkpoint.pt", headers=headers).status_code == 404

    # A second proposal samples the first one's checkpoint, found by its sha256.
    checkpoint_sha = next(a["sha256"] for a in listing if a["name"] == "checkpoint.pt")
    sample_run = _propose_and_award(lite_client, call_id, pi, admin,
                                    {"kind": "sample", "checkpoint_sha256": checkpoint_sha, "count": 4,
                                     "inference_steps": 3})
    run = drive(scheduler, lite_engine, sample_run)
    assert run.state == "succeeded", run.message
    grid = lite_client.get(f"/api/runs/{sample_run}/artifacts/samples.png", headers=pi)
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    # ...but an outsider cannot propose to sample a checkpoint still under exclusive access.
    refused = lite_client.post(f"/api/calls/{call_id}/proposals", headers=outsider, json=proposal_body(
        job_plan={"kind": "sample", "checkpoint_sha256": checkpoint_sha}))
    assert refused.status_code == 422 and "no checkpoint" in refused.json()["detail"]


def test_cancel_and_exhausted_award_stop_runs(scheduler, lite_client, lite_session, lite_engine) -> None:
    admin = login(lite_client, create_user(lite_session, Role.admin).email)
    researcher = create_user(lite_session)
    pi = login(lite_client, researcher.email)
    call_id = _open_call(lite_client, admin)
    endless = {**TINY_TRAIN, "steps": 200_000}

    cancelled = _propose_and_award(lite_client, call_id, pi, admin, endless)
    starved = _propose_and_award(lite_client, call_id, pi, admin, endless, gpu_hours=0.001)  # 3.6 GPU-seconds
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        scheduler.tick()
        if lite_client.get(f"/api/runs/{cancelled}", headers=pi).json()["progress_detail"].get("step"):
            break
        time.sleep(0.5)
    answer = lite_client.post(f"/api/runs/{cancelled}/cancel", headers=pi).json()
    assert answer["cancel_requested"], (answer["state"], answer["message"], answer["progress_detail"])
    started = time.monotonic()
    first = drive(scheduler, lite_engine, cancelled, timeout=120)
    second = drive(scheduler, lite_engine, starved, timeout=120)
    print(f"stopped both in {time.monotonic() - started:.1f}s")
    assert first.state == "cancelled" and first.message.startswith("cancelled on request")
    assert "is kept as state.pt" in first.message  # it saved its state when asked, and the state was shipped
    assert second.state == "cancelled" and "used up" in second.message
    starved_view = lite_client.get(f"/api/runs/{starved}", headers=pi).json()
    assert starved_view["gpu_seconds"] == 4  # 0.001 GPU-hours, rounded to whole seconds; never more


def test_commons_ingest_to_a_model_card(scheduler, lite_client: TestClient, lite_session: Session,
                                        lite_engine) -> None:
    """An ingest run on the pool registers a dataset version; a train run on it becomes a model version registered
    from the portal, whose card gives the license breakdown of its Commons images."""
    from tests.commons_server import fake_commons
    from tests.factories import PASSWORD, post_form

    admin_user = create_user(lite_session, Role.admin)
    admin, pi = login(lite_client, admin_user.email), login(lite_client, create_user(lite_session).email)
    call_id = _open_call(lite_client, admin)
    with fake_commons() as (_, url, requests):
        pool = Scheduler(lite_engine, scheduler.settings.model_copy(update={
            "commons_api_url": url, "commons_contact": "ops@observatory.example", "commons_min_interval_s": 0}),
            scheduler.backend)
        ingest_run = _propose_and_award(lite_client, call_id, pi, admin, {
            "kind": "ingest", "name": "commons-test", "categories": ["Test images"], "resolution": 16,
            "blocklist": ["Edvard Munch"]})
        run = drive(pool, lite_engine, ingest_run)
    assert run.state == "succeeded", run.message
    assert run.message.endswith("registered as dataset commons-test@1")
    assert all("ops@observatory.example" in h["User-Agent"] for h in requests.headers)
    dataset = lite_client.get("/api/datasets/commons-test@1").json()
    assert dataset["images"] == 5 and dataset["origin"] == "Wikimedia Commons"
    assert dataset["licenses"] == {"Public domain": 2, "CC BY-SA 3.0 de": 1, "CC BY-SA 4.0": 2}

    train_run = _propose_and_award(lite_client, call_id, pi, admin, {**TINY_TRAIN, "dataset": "commons-test@1"})
    run = drive(scheduler, lite_engine, train_run)
    assert run.state == "succeeded", run.message
    assert run.job_plan["dataset_digest"] == dataset["digest"]

    post_form(lite_client, "/login", {"email": admin_user.email, "password": PASSWORD, "next": "/"})
    done = post_form(lite_client, f"/runs/{train_run}/register-model",
                     {"name": "commons-model", "notes": "", "confirmed": "yes"})
    assert "Registered commons-model@1." in done.text
    card = lite_client.get("/models/commons-model/1").text
    assert "Public domain: 2" in card and "CC BY-SA 3.0 de: 1" in card and "CC BY-SA 4.0: 2" in card
    assert "Wikimedia Commons" in card and "commons-test@1" in card


def test_a_replication_search_runs_on_the_pool_and_its_report_is_shown(scheduler, lite_client: TestClient,
                                                                      lite_session: Session, lite_engine) -> None:
    """Train, register the model from the portal, then search its samples for its training images on the pool:
    the job gets the checkpoint and the training set by digest, and the report is served as a sandboxed page."""
    from tests.factories import PASSWORD, post_form

    admin_user = create_user(lite_session, Role.admin)
    admin, pi = login(lite_client, admin_user.email), login(lite_client, create_user(lite_session).email)
    call_id = _open_call(lite_client, admin)
    train_run = _propose_and_award(lite_client, call_id, pi, admin, {**TINY_TRAIN, "resolution": 16})
    assert drive(scheduler, lite_engine, train_run).state == "succeeded"
    post_form(lite_client, "/login", {"email": admin_user.email, "password": PASSWORD, "next": "/"})
    registered = post_form(lite_client, f"/runs/{train_run}/register-model", {"name": "tiny", "confirmed": "yes"})
    assert "Registered tiny@1." in registered.text

    analysis = _propose_and_award(lite_client, call_id, pi, admin, {"kind": "replication", "model": "tiny@1",
                                                                     "samples": 8, "inference_steps": 4})
    run = drive(scheduler, lite_engine, analysis)
    assert run.state == "succeeded", run.message
    results = lite_client.get(f"/api/runs/{analysis}/artifacts/results.json", headers=pi).json()
    assert results["dataset"]["ref"] == "skimage-samples@1" and len(results["samples"]) == 8
    assert results["summary"]["copies"] >= 0 and results["thresholds"]["pairs"] == 12
    report = lite_client.get(f"/api/runs/{analysis}/artifacts/report.html", headers=pi)
    assert report.status_code == 200 and "Replication search: tiny@1" in report.text
    assert "sandbox" in report.headers["content-security-policy"]

    # "Analyse this run": the team measures the training run itself on its own award, on the pool.
    asked = lite_client.post(f"/api/runs/{train_run}/analyses", headers=pi, json={"job_plan": {
        "kind": "quality", "samples": 8, "inference_steps": 3, "kid_subsets": 2}})
    assert asked.status_code == 201, asked.text
    run = drive(scheduler, lite_engine, asked.json()["id"])
    assert run.state == "succeeded", run.message
    measured = lite_client.get(f"/api/runs/{run.id}/artifacts/results.json", headers=pi).json()
    assert measured["subject"] == f"run {train_run}" and measured["model_vs_training"]["images"] == [12, 8]
    assert "Sample quality: run" in lite_client.get(f"/api/runs/{run.id}/artifacts/report.html", headers=pi).text


def test_a_leave_out_ablation_end_to_end(scheduler, lite_client: TestClient, lite_session: Session,
                                         lite_engine) -> None:
    """One proposal's award trains a plan and its twin without one author (the same seeds), both become model
    versions, and the ablation analysis compares them, with intervals, in a report."""
    from tests.factories import PASSWORD, post_form

    admin_user = create_user(lite_session, Role.admin)
    admin, pi = login(lite_client, admin_user.email), login(lite_client, create_user(lite_session).email)
    call_id = _open_call(lite_client, admin)
    plan = {**TINY_TRAIN, "resolution": 16, "exclude_authors": ["Lav Varshney"],
            "leave_out_authors": ["Stefan van der Walt"]}
    proposal = lite_client.post(f"/api/calls/{call_id}/proposals", headers=pi, json=proposal_body(job_plan=plan))
    assert lite_client.post(f"/api/proposals/{proposal.json()['id']}/award", headers=admin,
                            json={"gpu_hours": 1.0}).status_code == 201
    runs = lite_client.get(f"/api/proposals/{proposal.json()['id']}/runs", headers=pi).json()
    assert len(runs) == 2
    post_form(lite_client, "/login", {"email": admin_user.email, "password": PASSWORD, "next": "/"})
    refs = []
    for listed in sorted(runs, key=lambda r: r["id"]):
        assert drive(scheduler, lite_engine, listed["id"]).state == "succeeded"
        done = post_form(lite_client, f"/runs/{listed['id']}/register-model", {"name": "twins", "confirmed": "yes"})
        refs.append(f"twins@{len(refs) + 1}")
        assert f"Registered {refs[-1]}." in done.text
    analysis = _propose_and_award(lite_client, call_id, pi, admin, {
        "kind": "ablation", "with_model": refs[0], "without_model": refs[1], "samples": 6, "inference_steps": 3,
        "bootstrap": 200})
    run = drive(scheduler, lite_engine, analysis)
    assert run.state == "succeeded", run.message
    results = lite_client.get(f"/api/runs/{analysis}/artifacts/results.json", headers=pi).json()
    assert results["config"]["left_out"] == ["Stefan van der Walt"] and results["config"]["control"] == ["Lav Varshney"]
    effect = results["scores"]["effect"]
    assert effect["low"] <= effect["high"] and "95% interval" in results["sentence"]
    report = lite_client.get(f"/api/runs/{analysis}/artifacts/report.html", headers=pi)
    assert report.status_code == 200 and results["sentence"].split(":")[0] in report.text
