"""The run page in a real browser, as its state moves: waiting is shown as waiting (queued, or handed to its node
but not yet started there), Started is when the job began on its node, a finished run says so with its final
loss as metrics.json has it, a CPU run says what its GPU-seconds mean, and a waiting run can be cancelled at no
charge."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Browser, expect
from sqlmodel import Session

from scheduler.loop import Scheduler
from scheduler.ray_backend import JobState
from service.models import Role
from tests.factories import TINY_TRAIN, auth_headers, award, create_call, create_proposal, create_user, under_review
from tests.pools import TRAIN_FILES, FakeJob, ScriptedPool
from tests.test_browser import _sign_in, browser, portal  # noqa: F401  (the module's fixtures)

pytestmark = pytest.mark.browser
METRICS = {"steps": 900, "final_loss": 0.0192, "seconds_per_step": 0.4, "loss_curve": [1.108, 0.2, 0.0119]}


def test_a_run_page_tells_waiting_from_running_and_ends_in_words(browser: Browser, portal: str,  # noqa: F811
                                                                  lite_session: Session, lite_engine,
                                                                  lite_settings, lite_client) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, call,
                                                        job_plan={**TINY_TRAIN, "steps": 900}))
    page = _sign_in(browser, portal, pi.email)
    page.goto(f"{portal}/runs/{run.id}")
    expect(page.locator("#run-state")).to_have_text("waiting")
    expect(page.locator("#run-started")).to_have_text("not yet")
    expect(page.locator("#run-progress-text")).to_contain_text("not started")

    # Handed to its node, but the job has not begun there: still waiting, and nothing has started.
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 1
    page.reload()
    expect(page.locator("#run-state")).to_have_text("waiting")
    expect(page.locator("#attempts")).to_contain_text("waiting for its node")
    expect(page.locator("#run-started")).to_have_text("not yet")

    # The job reports from its node: now it runs, and Started is that moment (the page follows by itself).
    job = FakeJob(lite_client, pool.token())
    job.start()
    expect(page.locator("#run-state")).to_have_text("running", timeout=10_000)
    expect(page.locator("#run-started")).not_to_have_text("not yet")
    job.log("step 450 loss 0.0301\n@@progress {}\n", {"phase": "train", "step": 450, "total": 900, "fraction": 0.5,
                                                        "images_per_s": 212.5, "gpu_memory_gb": 3.1})
    expect(page.locator("#run-progress-text")).to_contain_text("step 450 / 900", timeout=10_000)
    expect(page.locator("#run-progress-text")).to_contain_text("212.5 images/s · 3.1 GB of GPU memory")
    expect(page.locator("#run-log")).to_have_text("step 450 loss 0.0301", timeout=10_000)  # live, no records

    job.outputs({**TRAIN_FILES, "metrics.json": json.dumps(METRICS).encode()})
    job.end(exit_code=0)
    pool.set(pool.submitted[-1], JobState.succeeded)
    scheduler.reconcile()
    expect(page.locator("#run-state")).to_have_text("succeeded", timeout=10_000)
    expect(page.locator("#run-progress-text")).to_have_text("100% · done · 900 steps")
    expect(page.locator("figcaption", has_text="Training loss")).to_contain_text("1.1080 at the start → 0.0192")
    expect(page.get_by_text("it ran on CPUs: each CPU-second of a run counts as a GPU-second")).to_be_visible()
    manifest = lite_client.get(f"/api/runs/{run.id}/artifacts/manifest.json", headers=auth_headers(lite_session, pi))
    assert manifest.json()["state"] == "succeeded"
    checkpoint = lite_client.get(f"/api/runs/{run.id}/artifacts/checkpoint.pt", headers=auth_headers(lite_session, pi))
    assert checkpoint.headers["content-type"] == "application/octet-stream"

    # A second run, cancelled while it waits: it never starts and costs nothing.
    _, waiting = award(lite_session, admin, create_proposal(lite_session, pi, call))
    page.goto(f"{portal}/runs/{waiting.id}")
    page.get_by_role("button", name="Cancel run").click()
    scheduler.dispatch()
    page.goto(f"{portal}/runs/{waiting.id}")
    expect(page.locator("#run-state")).to_have_text("cancelled")
    expect(page.locator("#run-gpu-seconds")).to_have_text("0")
    expect(page.locator("#run-started")).to_have_text("not yet")

    # A third, cancelled while its job waits in Ray's queue on its node: Ray is told to stop it at once, and the
    # run ends cancelled without ever starting or costing anything.
    _, queued = award(lite_session, admin, create_proposal(lite_session, pi, call))
    assert scheduler.dispatch() == 1
    page.goto(f"{portal}/runs/{queued.id}")
    expect(page.locator("#run-state")).to_have_text("waiting")
    page.get_by_role("button", name="Cancel run").click()
    scheduler.reconcile()
    assert pool.stopped == [pool.submitted[-1]]
    pool.set(pool.submitted[-1], JobState.stopped)
    scheduler.reconcile()
    page.goto(f"{portal}/runs/{queued.id}")
    expect(page.locator("#run-state")).to_have_text("cancelled")
    expect(page.locator("#run-gpu-seconds")).to_have_text("0")
    expect(page.locator("#run-started")).to_have_text("not yet")


def test_admins_see_the_work_the_capacity_left_and_why_outputs_are_held(browser: Browser, portal: str,  # noqa: F811
                                                                        lite_session: Session, lite_engine,
                                                                        lite_settings) -> None:
    from tests.factories import archive_outputs

    admin, pi, other = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)
    call = create_call(lite_session, admin, capacity=10)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, call, requested_gpu_hours=3),
                   gpu_hours=3)
    archive_outputs(lite_session, lite_settings, run, {"samples.png": b"png"})
    pending = under_review(lite_session, admin, create_proposal(lite_session, other, call))
    settings = lite_settings.model_copy(update={"run_on_head": False})
    Scheduler(lite_engine, settings, ScriptedPool()).dispatch()  # no node takes work: the run waits, saying why

    desk = _sign_in(browser, portal, admin.email)
    desk.get_by_role("link", name="Runs", exact=True).click()
    active = desk.locator("#active-runs")
    expect(active).to_contain_text(f"run {run.id}")
    expect(active).to_contain_text("waiting: no node that takes work is online")
    desk.goto(f"{portal}/runs/{run.id}")
    held = desk.locator("#outputs-held")  # the samples and the run's manifest
    expect(held).to_contain_text("2 files are in the archive, exclusive to the proposal's team")
    desk.goto(f"{portal}/proposals/{pending.id}")
    expect(desk.locator("#call-left")).to_have_text(f"The call “{call.title}” has 7 of its 10 GPU-hours left to award.")

    # The PI sees their own runs only, and each proposal in their list says how its runs stand.
    page = _sign_in(browser, portal, pi.email)
    page.goto(f"{portal}/proposals")
    expect(page.locator(".proposal-runs")).to_contain_text(f"run {run.id}: waiting")  # the word every page uses
    page.get_by_role("link", name="My runs").click()
    expect(page.locator("#active-runs")).to_contain_text(f"run {run.id}")
    page = _sign_in(browser, portal, other.email)
    page.get_by_role("link", name="My runs").click()
    expect(page.get_by_text("Nothing is queued or running.")).to_be_visible()


def test_two_runs_side_by_side(browser: Browser, portal: str, lite_session: Session, lite_settings,  # noqa: F811
                               lite_client) -> None:
    from tests.factories import archive_outputs

    admin, pi, other = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)
    call = create_call(lite_session, admin)
    made = []
    for steps, final in ((2, 0.5), (40, 0.02)):
        plan = {**TINY_TRAIN, "steps": steps}
        _, run = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=plan))
        metrics = {**METRICS, "final_loss": final, "loss_curve": [1.0, final]}
        archive_outputs(lite_session, lite_settings, run, {"samples.png": TRAIN_FILES["samples.png"],
                                                           "metrics.json": json.dumps(metrics).encode()})
        made.append(run)
    outsider = auth_headers(lite_session, other)
    page = _sign_in(browser, portal, pi.email)
    page.get_by_role("link", name="My runs").click()
    page.locator("select[name=a]").select_option(str(made[0].id))
    page.locator("select[name=b]").select_option(str(made[1].id))
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("h1")).to_have_text(f"Run {made[0].id} beside run {made[1].id}")
    expect(page.locator("img.compare-samples")).to_have_count(2)
    expect(page.locator("#compare-runs")).to_contain_text("1.0000 → 0.5000")
    expect(page.locator("#compare-runs")).to_contain_text("1.0000 → 0.0200")
    differs = page.locator("#compare-plans tr.differs")
    expect(differs).to_have_count(1)
    expect(differs).to_contain_text("steps")
    # Someone outside the proposal cannot compare its runs.
    refused = lite_client.get(f"/runs/compare?a={made[0].id}&b={made[1].id}", headers=outsider)
    assert refused.status_code == 404
