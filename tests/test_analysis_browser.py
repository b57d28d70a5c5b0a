"""An analysis report in a real browser: it renders, as a page of its own, and a script inside it never runs (the
report is served with a policy that allows inline styles and data: pictures only, in a sandbox). The pairs page
takes a mark."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect
from sqlmodel import Session

from service.models import Role, Run, RunState
from tests.factories import archive_outputs, award, create_call, create_proposal, create_user
from tests.test_browser import _sign_in, browser, portal  # noqa: F401  (the module's fixtures)
from tests.test_permissions import ANALYSIS_FILES

pytestmark = pytest.mark.browser
HOSTILE = (b"<!doctype html><html><head><title>report</title><style>p{color:#123}</style></head><body>"
           b"<h1>Replication search</h1><p id='numbers'>3 copies</p>"
           b"<script>document.title = 'ran'; document.body.append('script ran')</script>"
           b"<img src=x onerror=\"document.title='ran too'\"></body></html>")


def test_a_report_renders_and_runs_no_script(browser: Browser, portal: str,  # noqa: F811
                                             lite_session: Session, lite_settings) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin)))
    run = lite_session.get(Run, run.id)
    run.job_kind, run.state = "replication", RunState.succeeded
    lite_session.add(run)
    lite_session.commit()
    archive_outputs(lite_session, lite_settings, run, {**ANALYSIS_FILES, "report.html": HOSTILE})
    page = _sign_in(browser, portal, pi.email)
    page.goto(f"{portal}/runs/{run.id}")
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Open the analysis report").click()
    report = opened.value
    report.wait_for_load_state()
    expect(report.locator("#numbers")).to_have_text("3 copies")  # it renders
    expect(report).to_have_title("report")  # and neither the script nor the handler ran
    assert "script ran" not in report.locator("body").inner_text()
    # The pairs page takes a mark.
    page.goto(f"{portal}/runs/{run.id}/pairs")
    page.locator("#pair-7").get_by_role("button", name="Copy", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Marked sample 7: a copy.")
    expect(page.locator("#agreement")).to_contain_text("Of 1 marked pair")


def test_a_team_asks_for_an_analysis_of_its_finished_run(browser: Browser, portal: str,  # noqa: F811
                                                        lite_session: Session, lite_settings) -> None:
    """On a finished training run's page, the team picks an analysis and queues it on its award; the new run's
    page opens, and the training run lists it."""
    from service.models import Proposal, User
    from tests.factories import TINY_TRAIN
    from tests.pools import TRAIN_FILES

    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin),
                                                        job_plan={**TINY_TRAIN, "resolution": 16}))
    run = lite_session.get(Run, run.id)
    run.state = RunState.succeeded
    lite_session.add(run)
    lite_session.commit()
    archive_outputs(lite_session, lite_settings, run, TRAIN_FILES)
    owner = lite_session.get(User, lite_session.get(Proposal, run.proposal_id).pi_id)
    page = _sign_in(browser, portal, owner.email)
    page.goto(f"{portal}/runs/{run.id}")
    form = page.locator("#analyse")
    form.get_by_label("Analyse this run on its award:").select_option("quality")
    form.get_by_label("samples").fill("32")
    form.get_by_role("button", name="Queue the analysis").click()
    expect(page.get_by_role("status")).to_contain_text(f"a quality analysis of run {run.id}")
    from sqlmodel import select

    lite_session.rollback()  # a fresh read: the portal committed the run meanwhile
    queued = lite_session.exec(select(Run).where(Run.job_kind == "quality")).one()
    assert page.url.endswith(f"/runs/{queued.id}") and queued.job_plan["samples"] == 32
    assert queued.award_id == run.award_id and queued.job_plan["run"] == run.id
    page.goto(f"{portal}/runs/{run.id}")
    expect(page.locator("#analyses")).to_contain_text(f"run {run.id}")
    page.goto(f"{portal}/analyses")
    expect(page.locator("#replication-points")).to_contain_text("No replication search you may read")
