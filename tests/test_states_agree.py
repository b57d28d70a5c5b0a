"""One word for what a run is doing and one count of what the pool holds, on every page that shows them: the home
page, the proposal lists, the proposal's page, the runs list, the run's page, the comparison, the pool's pages."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import Browser, Page
from sqlmodel import Session

from service.db import writer
from service.models import AttemptState, PoolNode, Role, Run, RunAttempt, RunState
from service.pool.standing import labels_for
from service.timeutil import utcnow
from tests.factories import award, create_call, create_machine, create_proposal, create_user
from tests.test_browser import _sign_in, browser, portal  # noqa: F401  (the module's fixtures)

pytestmark = pytest.mark.browser


def _place(session: Session, run_id: int, *, started: bool) -> None:
    """Run `run_id` placed on a node; its job has reported from there when `started`."""
    run = session.get(Run, run_id)
    run.state, run.attempt = RunState.running, 1
    session.add(run)
    session.add(RunAttempt(run_id=run_id, number=1, pool="default", submission_id=secrets.token_hex(8),
                           token_hash=secrets.token_hex(32), state=AttemptState.running, node_id="head",
                           started_at=utcnow() if started else None))


def _word(page: Page, run_id: int, where: str) -> str:
    """The word the page shows for run `run_id`."""
    if where == "run":
        return page.locator("#run-state").inner_text().strip()
    if where == "list":  # home and the proposal lists: "run 3: waiting"
        text = page.locator(f".proposal-runs a[href='/runs/{run_id}']").inner_text()
        return re.match(rf"run {run_id}: (\w+)", text.strip()).group(1)
    row = page.locator("tr", has=page.locator(f"a[href='/runs/{run_id}']")).first
    return row.locator(".badge").first.inner_text().strip()


def test_every_page_says_the_same_of_runs_and_the_pool(browser: Browser, portal: str,  # noqa: F811
                                                       lite_session: Session) -> None:
    admin, pi, owner = (create_user(lite_session, Role.admin), create_user(lite_session),
                        create_user(lite_session))
    call = create_call(lite_session, admin, capacity=10)
    runs = [award(lite_session, admin, create_proposal(lite_session, pi, call, title=f"Study {i}"))[1].id
            for i in range(3)]
    queued, started, placed = runs
    machine, _ = create_machine(lite_session, owner, admin, gpu_model="NVIDIA RTX A4000", gpu_count=1, vram_gb=16)
    with Session(writer(lite_session.get_bind()), expire_on_commit=False) as session:
        _place(session, started, started=True)
        _place(session, placed, started=False)
        queued_run = session.get(Run, queued)
        queued_run.message = "waiting for a node with 1 CPU free"
        session.add(queued_run)
        # The observatory's own head (busy with a run) and an owner's machine, both online; one node gone.
        session.add(PoolNode(node_id="head", address="127.0.0.1", alive=True, is_head=True,
                             resources={"CPU": 2}, labels={}))
        session.add(PoolNode(node_id="box", address="10.8.0.7", alive=True, resources={"CPU": 4, "GPU": 1},
                             labels=labels_for(machine)))
        session.add(PoolNode(node_id="gone", address="10.8.0.9", alive=False, resources={"CPU": 16}, labels={}))
        session.commit()
    expected = {queued: "waiting", started: "running", placed: "waiting"}

    page = _sign_in(browser, portal, pi.email)
    seen: dict[str, dict[int, str]] = {}
    page.goto(portal)
    seen["home"] = {r: _word(page, r, "list") for r in runs}
    assert page.locator("#pool-summary").inner_text().startswith("The pool: 2 nodes online, 1 GPU, 6 CPUs")
    page.goto(f"{portal}/proposals")
    seen["proposals"] = {r: _word(page, r, "list") for r in runs}
    for r in runs:
        page.goto(f"{portal}/runs/{r}")
        seen.setdefault("run page", {})[r] = _word(page, r, "run")
        proposal_id = lite_session.get(Run, r).proposal_id
        page.goto(f"{portal}/proposals/{proposal_id}")
        seen.setdefault("proposal page", {})[r] = _word(page, r, "row")
    page.goto(f"{portal}/runs")
    seen["runs list"] = {r: _word(page, r, "row") for r in runs}
    page.goto(f"{portal}/runs/compare?a={queued}&b={started}")
    states = page.locator("tr", has_text="State").locator("td")
    seen["compare"] = {queued: states.nth(0).inner_text().strip(), started: states.nth(1).inner_text().strip()}
    for where, words in seen.items():
        assert words == {r: expected[r] for r in words}, f"{where} says {words}, not {expected}"
    # Why the queued run waits: the node that takes work is online and busy, and the pages say so, not "offline".
    page.goto(f"{portal}/runs")
    assert "waiting for a node with 1 CPU free" in page.locator("tr", has=page.locator(
        f"a[href='/runs/{queued}']")).inner_text()

    # The pool: the same nodes, GPUs and CPUs on the public page, the home page and the admins' nodes page.
    page.goto(f"{portal}/pool")
    assert page.locator("#pool-nodes").inner_text().strip() == "2 (1 lent by owners, 1 the observatory's own)"
    assert page.locator("#pool-gpus").inner_text().strip() == "1"
    assert page.locator("#pool-cpus").inner_text().strip() == "6"
    desk = _sign_in(browser, portal, admin.email)
    desk.goto(f"{portal}/pool/nodes")
    assert desk.locator("#pool-summary").inner_text().startswith("2 nodes online, 1 GPU, 6 CPUs")
