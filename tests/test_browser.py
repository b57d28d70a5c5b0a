"""The portal in a real browser: a researcher signs in, submits a proposal, an admin awards it, the run shows up."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect, sync_playwright
from sqlmodel import Session, func, select

from service.models import CallKind, Proposal, Role
from tests.factories import PASSWORD, create_call, create_cycle, create_proposal, create_user
from tests.live import live_server

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def portal(lite_settings, lite_engine) -> Iterator[str]:
    with live_server(lite_settings, lite_engine) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _sign_in(browser: Browser, portal: str, email: str, password: str = PASSWORD, **context: Any):
    """A page of a browser context of its own (`context`: Playwright's options, e.g. viewport), signed in."""
    page = browser.new_context(**context).new_page()
    page.goto(f"{portal}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Sign out")).to_be_visible()
    return page


def test_propose_award_and_see_the_run(browser: Browser, portal: str, lite_session: Session, tmp_path) -> None:
    admin, researcher = create_user(lite_session, Role.admin), create_user(lite_session)
    cycle = create_cycle(lite_session, admin)
    call = create_call(lite_session, admin, capacity=5, kind=CallKind.director, cycle_id=cycle.id)

    page = _sign_in(browser, portal, researcher.email)
    page.get_by_role("link", name=call.title).click()
    page.get_by_role("link", name="Write a proposal").click()
    page.get_by_label("Title").fill("Samples of a tiny Commons model")
    page.get_by_label("Abstract").fill("Train briefly and look.")
    page.get_by_label("Scientific justification").fill("A first look at memorisation.")
    page.get_by_label("Requested GPU-hours").fill("50")
    page.locator("input[name='train.steps']").fill("20")
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.locator("#requested_gpu_hours-error")).to_have_text(
        "The call has 5 GPU-hours in all: ask for 5 or less.")
    assert lite_session.exec(select(func.count()).select_from(Proposal)).one() == 0

    page.get_by_label("Requested GPU-hours").fill("2")
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.get_by_role("status")).to_contain_text("Proposal submitted.")
    expect(page.locator("h1 .badge")).to_have_text("submitted")
    proposal_url = page.url
    lite_session.rollback()  # end the read transaction: the next read sees what the server committed
    proposal = lite_session.exec(select(Proposal)).one()
    assert proposal.job_plan["steps"] == 20 and proposal.requested_gpu_hours == 2

    chair = _sign_in(browser, portal, admin.email)
    chair.goto(proposal_url)
    chair.get_by_label("GPU-hours").fill("1.5")
    chair.get_by_role("button", name="Award").click()
    expect(chair.get_by_role("status")).to_contain_text("Awarded 1.5 GPU-hours")

    page.reload()
    expect(page.locator("#award")).to_contain_text("1.5 GPU-hours awarded")
    page.get_by_role("link", name="run 1").click()
    expect(page.locator("#run-state")).to_have_text("waiting")
    expect(page.locator("#run-started")).to_have_text("not yet")
    expect(page.locator("#run-progress")).to_be_visible()
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)


@pytest.fixture
def attacker_site(portal: str):
    """Another site (another port: same host, so the browser still sends the portal's cookie) whose page submits
    a form to the portal as soon as it loads."""
    import http.server
    import threading

    from tests.live import free_port

    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()


def test_a_cross_site_form_cannot_act_for_the_signed_in_user(browser: Browser, portal: str, attacker_site,
                                                             lite_session: Session) -> None:
    base, pages = attacker_site
    pi = create_user(lite_session)
    call = create_call(lite_session, create_user(lite_session, Role.admin))
    draft = create_proposal(lite_session, pi, call, submit=False)
    pages["/"] = (f'<form id="f" method="post" action="{portal}/proposals/{draft.id}/submit"></form>'
                  f'<script>document.getElementById("f").submit()</script>').encode()
    page = _sign_in(browser, portal, pi.email)
    page.goto(f"{base}/")
    expect(page.get_by_role("alert")).to_contain_text("cross-site request refused")
    lite_session.rollback()
    lite_session.expire_all()
    assert lite_session.get(Proposal, draft.id).state == "draft"
    # The portal's own button still works.
    page.goto(f"{portal}/proposals/{draft.id}")
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.get_by_role("status")).to_contain_text("Proposal submitted.")


def test_the_api_docs_render_from_this_machine_alone(browser: Browser, portal: str) -> None:
    """The footer's "API" link: Swagger UI drawn from assets the observatory serves, no request leaving it."""
    page = browser.new_context().new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(portal)
    page.get_by_role("link", name="API").click()
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Commons Observatory")
    expect(page.get_by_text("/api/pool/join", exact=True)).to_be_visible()
    assert requested and all(url.startswith(portal) for url in requested), requested
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_every_problem_of_a_proposal_is_shown_at_its_field(browser: Browser, portal: str,
                                                           lite_session: Session) -> None:
    admin, researcher = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin, capacity=5)
    page = _sign_in(browser, portal, researcher.email)
    page.goto(f"{portal}/calls/{call.id}/propose")
    page.get_by_label("Title").fill("   ")  # spaces only
    page.get_by_label("Abstract").fill("Train briefly and look.")
    page.get_by_label("Requested GPU-hours").fill("lots")
    page.locator("input[name='train.steps']").fill("twelve")
    page.locator("input[name='train.resolution']").fill("18")  # not divisible by 4, as three blocks need
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.get_by_role("alert")).to_have_text("5 problems to fix: see the marked fields.")
    expect(page.locator("#train-resolution-error")).to_contain_text("18 is not divisible by 4")  # all at once
    expect(page.locator("#title-error")).to_have_text("Must not be blank.")
    expect(page.locator("#justification-error")).to_have_text("This cannot be empty.")
    expect(page.locator("#requested_gpu_hours-error")).to_have_text("Enter a number.")
    expect(page.locator("#train-steps-error")).to_have_text("Enter a whole number.")
    expect(page.get_by_label("Title")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Abstract")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Abstract")).to_have_value("Train briefly and look.")  # what was typed stays
    # The plan's own rules, checked once its fields are right, are shown on the plan.
    page.locator("input[name='train.steps']").fill("20")
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.locator("#train-resolution-error")).to_have_text(
        "18 is not divisible by 4, as 3 UNet blocks need (16 or 20 would do)")
    expect(page.locator("#estimate")).to_be_empty()  # the estimate waits for a plan of a valid shape
    # A misspelled author would silently leave nobody out: it is refused, naming the authors there are.
    page.locator("input[name='train.resolution']").fill("16")
    page.locator("input[name='train.exclude_authors']").fill("NASA, Nassa")
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.locator("#train-exclude_authors-error")).to_contain_text("No image in skimage-samples@1 is by 'Nassa'")
    expect(page.locator("#train-exclude_authors-error")).to_contain_text("Stefan van der Walt")
    expect(page.locator("select[name='train.dataset']")).to_have_value("skimage-samples@1")
    # The estimate beside the hours follows the plan as it changes.
    page.locator("input[name='train.exclude_authors']").fill("NASA")
    expect(page.locator("#estimate")).to_contain_text("about 0.00 GPU-hours (0 min 8 s)")  # 20 steps
    page.locator("input[name='train.steps']").fill("6000")
    expect(page.locator("#estimate")).to_contain_text("about 0.52 GPU-hours (31 min 2 s)")
    expect(page.locator("#estimate")).to_contain_text("0.31 s a step measured for the default train plan")
    expect(page.get_by_text("Training steps")).to_be_visible()
    assert "Value error" not in page.content() and "Input should be" not in page.content()
    lite_session.rollback()
    assert lite_session.exec(select(func.count()).select_from(Proposal)).one() == 0


def test_a_draft_keeps_whatever_is_there_and_is_edited_submitted_or_deleted(browser: Browser, portal: str,
                                                                           lite_session: Session) -> None:
    admin, researcher = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin, capacity=5)
    page = _sign_in(browser, portal, researcher.email)
    page.goto(f"{portal}/calls/{call.id}/propose")
    page.get_by_label("Title").fill("Half an idea")
    page.locator("input[name='train.steps']").fill("")  # unfinished: the plan takes its default when submitted
    page.get_by_label("Requested GPU-hours").fill("5000")  # the call has 5
    page.locator("input[name='train.resolution']").fill("17")
    page.locator("input[name='train.exclude_authors']").fill("Nassa")
    page.get_by_role("button", name="Save draft").click()
    # Saved as it is, and everything that stands in the way of submitting it is said at once, at its field.
    expect(page.get_by_role("status")).to_contain_text("Draft saved. 5 things to fix before it can be submitted")
    expect(page.locator("#abstract-error")).to_have_text("This cannot be empty.")
    expect(page.locator("#justification-error")).to_have_text("This cannot be empty.")
    expect(page.locator("#requested_gpu_hours-error")).to_have_text(
        "The call has 5 GPU-hours in all: ask for 5 or less.")
    expect(page.locator("#train-resolution-error")).to_contain_text("17 is not divisible by 4")
    expect(page.locator("#train-exclude_authors-error")).to_contain_text("No image in skimage-samples@1 is by 'Nassa'")
    assert "Value error" not in page.content() and "Input should be" not in page.content()
    page.locator("input[name='train.resolution']").fill("16")
    page.locator("input[name='train.exclude_authors']").fill("")
    page.get_by_label("Requested GPU-hours").fill("")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("status")).to_contain_text("Draft saved. 3 things to fix")
    lite_session.rollback()
    draft_url = f"{portal}/proposals/{lite_session.exec(select(Proposal)).one().id}"
    page.goto(draft_url)
    expect(page.locator("h1 .badge")).to_have_text("draft")

    # Submitting it as it is names what is missing, and it stays a draft.
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.get_by_role("status")).to_contain_text("the draft is not complete: fill in abstract, justification")
    expect(page.locator("h1 .badge")).to_have_text("draft")

    # Edited in the portal, checked field by field, then submitted.
    page.get_by_role("link", name="Edit draft").click()
    expect(page.get_by_label("Title")).to_have_value("Half an idea")
    page.get_by_label("Abstract").fill("Does it copy?")
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.locator("#justification-error")).to_have_text("This cannot be empty.")
    page.get_by_label("Scientific justification").fill("Because we must know.")
    page.get_by_label("Requested GPU-hours").fill("2")
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.get_by_role("status")).to_contain_text("Proposal submitted.")
    assert page.url == draft_url
    lite_session.rollback()
    proposal = lite_session.exec(select(Proposal)).one()
    assert (proposal.state, proposal.abstract, proposal.job_plan["steps"]) == ("submitted", "Does it copy?", 600)

    # A draft with nothing in it is listed by what it is, and can be deleted.
    page.goto(f"{portal}/calls/{call.id}/propose")
    page.get_by_role("button", name="Save draft").click()
    page.goto(f"{portal}/proposals")
    page.get_by_role("link", name="(untitled draft)").click()
    page.get_by_role("button", name="Delete draft").click()
    expect(page.get_by_role("status")).to_contain_text("Draft deleted.")
    lite_session.rollback()
    assert lite_session.exec(select(func.count()).select_from(Proposal)).one() == 1


def test_a_sample_plan_offers_the_checkpoints_one_may_use(browser: Browser, portal: str, lite_session: Session,
                                                          lite_settings) -> None:
    from tests.factories import archive_outputs, award
    from tests.pools import TRAIN_FILES

    admin, researcher, outsider = (create_user(lite_session, role) for role in (Role.admin, Role.researcher,
                                                                               Role.researcher))
    call = create_call(lite_session, admin, capacity=5)
    trained = create_proposal(lite_session, researcher, call, title="A model to sample")
    _, run = award(lite_session, admin, trained)
    archive_outputs(lite_session, lite_settings, run, TRAIN_FILES)
    sha = hashlib.sha256(TRAIN_FILES["checkpoint.pt"]).hexdigest()

    page = _sign_in(browser, portal, outsider.email)  # still exclusive to its team: not offered
    page.goto(f"{portal}/calls/{call.id}/propose")
    page.get_by_label("sample", exact=True).check()
    expect(page.locator("input[name='sample.checkpoint_sha256']")).to_have_attribute(
        "placeholder", "no checkpoint you may use yet: train one first")

    page = _sign_in(browser, portal, researcher.email)
    page.goto(f"{portal}/calls/{call.id}/propose")
    page.get_by_label("sample", exact=True).check()
    choice = page.locator("select[name='sample.checkpoint_sha256']")
    expect(choice).to_contain_text(f"run {run.id} · A model to sample · {sha[:12]}")
    page.get_by_label("Title").fill("Samples of it")
    page.get_by_label("Abstract").fill("Look.")
    page.get_by_label("Scientific justification").fill("To see.")
    page.get_by_label("Requested GPU-hours").fill("1")
    page.get_by_role("button", name="Submit proposal").click()
    expect(page.get_by_role("status")).to_contain_text("Proposal submitted.")
    lite_session.rollback()
    made = lite_session.exec(select(Proposal).where(Proposal.title == "Samples of it")).one()
    assert made.job_plan["checkpoint_sha256"] == sha
