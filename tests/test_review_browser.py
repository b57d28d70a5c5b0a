"""One full review cycle in a real browser: three researchers submit, three reviewers review, the chair ranks and
awards, the PIs see their results and rate the reviews, and the first awarded run starts."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect
from sqlmodel import Session, select

from scheduler.loop import Scheduler
from service.models import Proposal, Role, Run, RunState
from tests.factories import close_call, create_call, create_user
from tests.pools import ScriptedPool
from tests.test_browser import _sign_in, browser, portal  # noqa: F401  (the module's fixtures)

pytestmark = pytest.mark.browser

# title -> the grade each reviewer gives it (1.0 best)
PROPOSALS = {"Copying at small scale": 1.5, "Leaving one author out": 2.5, "Sampling steps": 4.0}


def test_one_full_review_cycle(browser: Browser, portal: str, lite_session: Session,  # noqa: F811
                               lite_engine, lite_settings) -> None:
    s = lite_session
    admin = create_user(s, Role.admin, name="Ada Chair")
    authors = [create_user(s, name=n, institution=i) for n, i in
               (("Alma Author", "Aarhus"), ("Bruno Author", "Bologna"), ("Cleo Author", "Cork"))]
    panel = [create_user(s, Role.reviewer, name=n, institution=i) for n, i in
             (("Rui Reviewer", "Riga"), ("Rhea Reviewer", "Reims"), ("Remy Reviewer", "Rome"))]
    call = create_call(s, admin, capacity=10, reviewers_per_proposal=2, triage_fraction=0.34)

    # Three researchers submit.
    pis = {}
    for author, title in zip(authors, PROPOSALS, strict=True):
        page = _sign_in(browser, portal, author.email)
        page.goto(f"{portal}/calls/{call.id}")
        page.get_by_role("link", name="Write a proposal").click()
        page.get_by_label("Title").fill(title)
        page.get_by_label("Abstract").fill(f"What {title.lower()} tells us.")
        page.get_by_label("Scientific justification").fill("Small, cheap, and it answers a real question.")
        page.get_by_label("Requested GPU-hours").fill("2")
        page.locator("input[name='train.steps']").fill("20")
        page.get_by_role("button", name="Submit proposal").click()
        expect(page.locator("#state")).to_have_text("submitted")
        expect(page.locator("#frozen")).to_contain_text("the text is frozen")
        pis[title] = page

    # The deadline passes; the chair starts the review.
    close_call(s, call)
    chair = _sign_in(browser, portal, admin.email)
    chair.goto(f"{portal}/calls/{call.id}")
    chair.get_by_role("link", name="Ranking and awards").click()
    chair.get_by_role("button", name="Start the review").click()
    expect(chair.get_by_role("status")).to_contain_text("Review started: 3 proposals, 6 assignments")

    # Three reviewers each accept two proposals and review them.
    for reviewer in panel:
        page = _sign_in(browser, portal, reviewer.email)
        page.get_by_role("link", name="Review", exact=True).click()
        rows = page.locator("#queue a")
        expect(rows).to_have_count(2)
        for i in range(2):
            page.locator("#queue a").nth(i).click()
            title = page.locator("h1").inner_text()
            page.get_by_role("button", name="No conflict: review it").click()
            expect(page.locator("#anonymous")).to_contain_text("dual-anonymous")
            expect(page.locator("#feasibility")).to_contain_text("GPU-hours")
            page.get_by_label("Grade, 1.0 (best) to 5.0").fill(str(PROPOSALS[title]))
            page.get_by_label("Your expertise in this area").select_option("high")
            page.get_by_label("For the committee only").fill(f"{reviewer.name} thinks it is sound.")
            page.get_by_label("For the PI (passed on without your name)").fill(f"On “{title}”: clear and feasible.")
            page.get_by_role("button", name="Submit review").click()
            expect(page.get_by_role("status")).to_contain_text("Review saved")
            page.get_by_role("link", name="← Your review queue").click()
        expect(page.locator("#queue")).to_contain_text("reviewed")

    # The chair sees the ranking, awards the top two (capacity shown as it is used) and releases the decisions.
    chair.reload()
    ranking = chair.locator("#ranking tr[data-proposal]")
    expect(ranking).to_have_count(3)
    expect(ranking.nth(0)).to_contain_text("Copying at small scale")
    expect(ranking.nth(2)).to_contain_text("Sampling steps")
    expect(chair.locator("#ranking .triage-line")).to_have_count(1)
    first = ranking.nth(0)
    first.locator("select[name='priority']").select_option("A")
    first.get_by_role("button", name="Award").click()
    expect(chair.get_by_role("status")).to_contain_text("Awarded 2 GPU-hours in class A")
    expect(chair.locator("#capacity")).to_contain_text("2 of 10 GPU-hours awarded, 8 left")
    chair.locator("#ranking tr[data-proposal]").nth(1).get_by_role("button", name="Award").click()
    expect(chair.locator("#capacity")).to_contain_text("4 of 10 GPU-hours awarded, 6 left")
    chair.get_by_role("button", name="Release the decisions").click()
    # Asked first, with what happens: the undecided proposal is named as the one declined.
    expect(chair.locator("#consequences")).to_contain_text("Declined: #3 “Sampling steps”")
    expect(chair.locator("#consequences")).to_contain_text("2 awarded proposals stand")
    chair.get_by_role("button", name="Yes, release the decisions").click()
    expect(chair.get_by_role("status")).to_contain_text("Decisions released")
    s.rollback()
    states = {p.title: p.state for p in s.exec(select(Proposal))}
    assert states == {"Copying at small scale": "accepted", "Leaving one author out": "accepted",
                      "Sampling steps": "declined"}

    # The PIs see their results, numbered reviewers and the comments for them, and rate a review.
    top = pis["Copying at small scale"]
    top.reload()
    expect(top.locator("#state")).to_have_text("accepted")
    expect(top.locator("#band")).to_contain_text("top quarter of 3")
    expect(top.locator(".review-for-pi")).to_have_count(2)
    expect(top.locator(".review-for-pi").first).to_contain_text("Reviewer 1")
    assert not any(r.name in top.content() for r in panel)
    top.locator(".review-for-pi").first.get_by_label("How helpful was this review?").select_option("5")
    top.locator(".review-for-pi").first.get_by_role("button", name="Rate").click()
    expect(top.get_by_role("status")).to_contain_text("Thank you")
    last = pis["Sampling steps"]
    last.reload()
    expect(last.locator("#state")).to_have_text("declined")
    expect(last.locator("#band")).to_contain_text("bottom quarter of 3")

    # The public list shows the accepted proposals; the committee sees the reviewers' record.
    last.goto(f"{portal}/accepted")
    expect(last.locator("article.accepted")).to_have_count(2)
    chair.goto(f"{portal}/reviewers")
    expect(chair.locator("#reviewers")).to_contain_text("5.0 (1 ratings)")

    # The first run starts: class A's run is placed first.
    Scheduler(lite_engine, lite_settings, ScriptedPool()).dispatch()
    s.rollback()
    top_run = s.exec(select(Run).join(Proposal, Proposal.id == Run.proposal_id)
                     .where(Proposal.title == "Copying at small scale")).one()
    assert top_run.state == RunState.running
    top.reload()
    top.get_by_role("link", name=f"run {top_run.id}").click()
    expect(top.locator("#attempts")).to_contain_text("waiting for its node")
