"""A cycle's report: per call the GPU-hours offered, awarded and used (from the ledger), the data products made
and public now, and the outcomes teams recorded; public, as a page and as JSON."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session

from service.archive import catalog
from service.ledger.service import account_id_for_award, debit
from service.models import Award, Role, Run, RunState
from service.proposals import outcomes
from service.timeutil import utcnow
from tests.factories import award, create_call, create_proposal, create_user


def test_the_cycle_report_sums_awarded_used_and_published(lite_client: TestClient, lite_session: Session) -> None:
    admin = create_user(lite_session, Role.admin)
    call = create_call(lite_session, admin, title="Cycle 3", capacity=20)
    pi = create_user(lite_session)
    done = []
    for hours, public in ((4.0, True), (2.0, False)):
        proposal = create_proposal(lite_session, pi, call, title=f"{hours:g} hours", requested_gpu_hours=hours)
        granted, run = award(lite_session, admin, proposal, gpu_hours=hours)
        run = lite_session.get(Run, run.id)
        debit(lite_session, account_id=account_id_for_award(lite_session, granted.id), seconds=1800,
              key=f"test-{run.id}", run_id=run.id, attempt=1)  # half an hour used of each
        run.state, run.finished_at = RunState.succeeded, utcnow()
        lite_session.add(run)
        if public:
            granted = lite_session.get(Award, granted.id)
            granted.exclusive_until = utcnow() - timedelta(days=1)
            lite_session.add(granted)
        lite_session.commit()
        done.append(proposal)
    catalog.sync(lite_session)
    outcomes.add(lite_session, pi, done[0].id, outcomes.OutcomeCreate(kind="paper", title="What the model copied",
                                                                      doi="10.1234/copied"))
    lite_session.commit()
    report = lite_client.get(f"/api/cycles/{call.cycle_id}/summary").json()  # anonymous
    assert report["awarded_gpu_hours"] == 6.0 and report["used_gpu_hours"] == 1.0
    assert report["products"] == 2 and report["products_public"] == 1
    row = report["calls"][0]
    assert (row["title"], row["awards"], row["runs_succeeded"], row["capacity_gpu_hours"]) == ("Cycle 3", 2, 2, 20)
    assert [(o["title"], o["proposal_title"]) for o in report["outcomes"]] == [("What the model copied", "4 hours")]
    page = lite_client.get(f"/cycles/{call.cycle_id}").text
    assert "1.00 GPU-hours (17% of the awarded)" in page and "What the model copied" in page
    assert "2 data products, 1 with their files public now" in page
    assert lite_client.get("/api/cycles/99999/summary").status_code == 404
