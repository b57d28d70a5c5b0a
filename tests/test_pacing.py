"""Pacing an award: with the clock moved, the PI is reminded once at each point of the period the award is behind
(through the outbox to a real SMTP server), the unused hours return to the cycle's pool at the end, exactly once,
and the committee sees which awards are behind."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from service.allocations import pacing
from service.errors import Conflict
from service.ledger.service import account_id_for_award, award_balance, debit
from service.mail.sender import deliver
from service.models import AwardReminder, CallKind, LedgerEntry, Role
from tests.factories import auth_headers, award, create_call, create_proposal, create_user, portal_signed_in
from tests.live import free_port
from tests.smtp import Inbox


def test_reminders_go_once_at_each_point_behind_and_unused_hours_return_once(
        lite_client: TestClient, lite_session: Session, lite_engine, lite_settings) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session, name="Ada Lovelace")
    call = create_call(lite_session, admin, title="Cycle 9", capacity=10)
    proposal = create_proposal(lite_session, pi, call, requested_gpu_hours=4, title="Slow starters")
    granted, run = award(lite_session, admin, proposal, gpu_hours=4)
    period = granted.exclusive_until - granted.awarded_at

    def at(share: float):  # noqa: ANN202
        return granted.awarded_at + period * share

    assert pacing.tick(lite_session, at(0.2)).reminded == 0  # before the first point
    assert pacing.tick(lite_session, at(0.3)).reminded == 1  # a quarter passed, nothing used
    assert pacing.tick(lite_session, at(0.3)).reminded == 0  # once
    lite_session.commit()
    debit(lite_session, account_id=account_id_for_award(lite_session, granted.id), seconds=round(1.2 * 3600),
          key="test-use", run_id=run.id, attempt=1)  # 30% used
    assert pacing.tick(lite_session, at(0.6)).reminded == 0  # half passed, 30% used: not under 25%
    assert pacing.tick(lite_session, at(0.8)).reminded == 1  # three quarters, under half
    lite_session.commit()
    assert [r.point for r in lite_session.exec(select(AwardReminder).order_by(AwardReminder.id))] == [0.25, 0.75]
    assert pacing.behind(lite_session, at(0.8))[0].behind

    port = free_port()
    inbox = Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=port)
    server.start()
    try:
        settings = lite_settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})
        sent, failed = deliver(lite_engine, settings, now=at(0.9))
    finally:
        server.stop()
    reminders = [m for m in inbox.messages if m["Subject"] == "Your award is behind: Slow starters"]
    assert failed == 0 and [m["To"] for m in reminders] == [pi.email, pi.email]
    assert "25% of the award's period has passed" in reminders[0].get_content()

    lite_session.commit()  # end this session's read: the mail's delivery wrote meanwhile
    end = granted.exclusive_until + timedelta(days=1)
    first = pacing.tick(lite_session, end)
    assert (first.expired, first.returned_s) == (1, round(2.8 * 3600))
    second = pacing.tick(lite_session, end + timedelta(days=30))
    assert (second.expired, second.returned_s) == (0, 0)  # exactly once
    lite_session.commit()
    assert award_balance(lite_session, granted.id) == 0
    assert pacing.returned_s(lite_session, call.cycle_id) == round(2.8 * 3600)
    kinds = [e.kind for e in lite_session.exec(select(LedgerEntry).where(LedgerEntry.key.like("%award-%")))]
    assert sorted(kinds) == ["expiry", "returned"]
    report = lite_client.get(f"/api/cycles/{call.cycle_id}/summary").json()
    assert report["returned_gpu_hours"] == 2.8
    # The director awards the returned hours again (the cycle set no reserve of its own), and no more.
    director = create_call(lite_session, admin, kind=CallKind.director, cycle_id=call.cycle_id, capacity=2.8)
    fits = create_proposal(lite_session, pi, director, requested_gpu_hours=2.8)
    assert award(lite_session, admin, fits, gpu_hours=2.8)[0].gpu_hours == 2.8
    again = create_call(lite_session, admin, kind=CallKind.director, cycle_id=call.cycle_id, capacity=1)
    more = create_proposal(lite_session, pi, again, requested_gpu_hours=1)
    with pytest.raises(Conflict, match=r"has 0 GPU-hours left \(2.8 of them returned unused\)"):
        award(lite_session, admin, more, gpu_hours=1)


def test_the_committee_sees_which_awards_are_behind_and_the_team_its_burn_down(
        lite_client: TestClient, lite_session: Session) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin, capacity=10)
    slow = create_proposal(lite_session, pi, call, requested_gpu_hours=2, title="Slow")
    busy = create_proposal(lite_session, pi, call, requested_gpu_hours=2, title="Busy")
    slow_award, _ = award(lite_session, admin, slow, gpu_hours=2)
    busy_award, busy_run = award(lite_session, admin, busy, gpu_hours=2)
    for granted in (slow_award, busy_award):  # both awarded four months ago
        granted.awarded_at -= timedelta(days=120)
        granted.exclusive_until -= timedelta(days=120)
        lite_session.add(granted)
    debit(lite_session, account_id=account_id_for_award(lite_session, busy_award.id), seconds=3600, key="busy",
          run_id=busy_run.id, attempt=1)
    lite_session.commit()
    listed = lite_client.get("/api/awards", headers=auth_headers(lite_session, admin)).json()
    assert [(a["title"], a["behind"]) for a in listed] == [("Slow", True), ("Busy", False)]
    assert lite_client.get("/api/awards", headers=auth_headers(lite_session, pi)).status_code == 403
    portal_signed_in(lite_client, admin)
    page = lite_client.get("/awards").text
    assert page.index("Slow") < page.index("Busy") and "behind" in page
    portal_signed_in(lite_client, pi)
    queue = lite_client.get(f"/awards/{slow_award.id}/queue").text
    assert 'id="burn-down"' in queue and "behind its pace" in queue
