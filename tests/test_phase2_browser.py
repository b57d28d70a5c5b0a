"""Phase II in a browser: an awardee queues a changed copy of a run and a 3-value sweep on the award, sees them
placed and charged and the balance fall; a change request goes to the chair, who approves it, audited."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import Browser, expect
from sqlmodel import Session, select

from scheduler.loop import Scheduler
from scheduler.ray_backend import JobState
from service.models import AuditEntry, Role, Run, RunState
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.pools import TRAIN_FILES, FakeJob, ScriptedPool
from tests.test_browser import _sign_in, browser, portal  # noqa: F401  (the module's fixtures)

pytestmark = pytest.mark.browser


def _run_everything(scheduler: Scheduler, pool: ScriptedPool, client, engine) -> None:  # noqa: ANN001
    """Place every queued run, let each job run a little over a second (so that it is charged), and end it."""
    done = len(pool.requests)
    scheduler.dispatch()
    jobs = [FakeJob(client, pool.token(i)) for i in range(done, len(pool.requests))]
    for job in jobs:
        assert job.start().status_code == 200
    time.sleep(1.5)
    for index, job in enumerate(jobs, start=done):
        job.outputs(TRAIN_FILES)
        job.end(exit_code=0)
        pool.set(pool.submitted[index], JobState.succeeded)
    scheduler.reconcile()


def test_an_awardee_queues_a_copy_and_a_sweep_and_the_chair_approves_a_change(
        browser: Browser, portal: str, lite_session: Session, lite_engine, lite_settings,  # noqa: F811
        lite_client) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session, name="Ada Lovelace")
    proposal = create_proposal(lite_session, pi, create_call(lite_session, admin), job_plan=dict(TINY_TRAIN),
                               requested_gpu_hours=2, title="Seeds and memorisation")
    granted, first = award(lite_session, admin, proposal, gpu_hours=2)
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    _run_everything(scheduler, pool, lite_client, lite_engine)  # the award's own run, charged

    page = _sign_in(browser, portal, pi.email)
    page.goto(f"{portal}/proposals/{proposal.id}")
    page.get_by_role("link", name="Queue a further run or a sweep on this award").click()
    balance = page.locator("#balance").inner_text()
    assert "2 GPU-hours awarded" in balance and "left" in balance
    page.locator("#award-runs").get_by_role("link", name="copy its plan").first.click()
    plan = json.loads(page.get_by_label("The plan (JSON, with its kind)").input_value())
    assert plan["kind"] == "train" and plan["steps"] == TINY_TRAIN["steps"]
    page.get_by_label("The plan (JSON, with its kind)").fill(json.dumps({**plan, "steps": 3}))
    page.get_by_role("button", name="Queue").click()
    expect(page.get_by_text(f"Queued run {first.id + 1} on the award.")).to_be_visible()

    page.goto(f"{portal}/awards/{granted.id}/queue")
    page.get_by_label("Field").fill("seed")
    page.get_by_label("Values, comma-separated").fill("1, 2, 3")
    page.get_by_role("button", name="Queue").click()
    expect(page.locator("h1")).to_contain_text("A sweep of seed")
    expect(page.locator("#sweep tr")).to_have_count(4)  # a header and three runs, waiting

    _run_everything(scheduler, pool, lite_client, lite_engine)
    page.reload()
    expect(page.locator("#sweep")).to_contain_text("succeeded")
    charged = [int(cell) for cell in page.locator("#sweep tr td:nth-child(5)").all_inner_texts()]
    assert len(charged) == 3 and all(seconds >= 1 for seconds in charged)
    page.goto(f"{portal}/awards/{granted.id}/queue")
    lite_session.commit()
    lite_session.expire_all()
    runs = lite_session.exec(select(Run).where(Run.award_id == granted.id)).all()
    assert len(runs) == 5 and all(r.state == RunState.succeeded for r in runs), [(r.id, r.state) for r in runs]
    used = float(page.locator("#balance").inner_text().split("; ")[1].split(" used")[0])
    left = float(page.locator("#balance strong").inner_text().split(" left")[0])
    assert used >= 5 / 3600 and left == pytest.approx(2 - used, abs=1e-4)  # the balance fell by what was charged

    # Another job kind: the committee decides.
    descriptor = {"kind": "descriptor", "dataset": first.job_plan["dataset"], "steps": 2, "batch_size": 8}
    page.get_by_label("The plan (JSON, with its kind)").fill(json.dumps(descriptor))
    page.get_by_role("button", name="Queue").click()
    expect(page.locator("#error")).to_contain_text("another job kind: descriptor")
    page.get_by_label("Reason (for a change the committee decides)").fill("Our own copy descriptor.")
    page.get_by_role("button", name="Queue").click()
    expect(page.locator("#changes")).to_contain_text("pending")

    chair = _sign_in(browser, portal, admin.email)
    chair.goto(f"{portal}/change-requests")
    expect(chair.locator("#changes")).to_contain_text("Our own copy descriptor.")
    chair.get_by_label("Note on change request 1").fill("Approved for the copy study.")
    chair.get_by_role("button", name="Approve").click()
    expect(chair.get_by_text("Change request 1 approved.")).to_be_visible()
    expect(chair.locator("#changes")).to_contain_text("approved")
    lite_session.commit()
    lite_session.expire_all()
    made = lite_session.exec(select(Run).where(Run.award_id == granted.id, Run.job_kind == "descriptor")).one()
    assert made.state == RunState.queued and made.requested_by == pi.id
    audit = lite_session.exec(select(AuditEntry).where(AuditEntry.action == "change.approve")).one()
    assert audit.actor_id == admin.id and audit.detail["runs"] == [made.id]
    chair.goto(f"{portal}/audit")
    expect(chair.locator("body")).to_contain_text("change.approve")
