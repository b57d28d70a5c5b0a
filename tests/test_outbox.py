"""E-mail goes through the outbox: nothing is lost while the SMTP server is down, it is sent once it is back, and a
reviewer's assignments arrive as one digest. A real SMTP server (aiosmtpd) on loopback receives it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlmodel import Session, select

from service.mail import outbox
from service.mail.sender import deliver, run_mail_loop
from service.models import OutboxMessage
from service.timeutil import utcnow
from tests.live import free_port
from tests.smtp import Inbox


@pytest.fixture
def smtp_port() -> int:
    return free_port()


def _queue_some(session: Session) -> None:
    outbox.queue(session, "pi@example.org", "Submitted: A", "Your proposal A was submitted.")
    outbox.queue(session, "pi@example.org", "Submitted: B", "Your proposal B was submitted.")
    for title in ("A", "B", "C"):
        outbox.queue(session, "rev@example.org", f"Review: “{title}”", f"Please review {title}.", kind="assignment")
    outbox.queue(session, "other-rev@example.org", "Review: “D”", "Please review D.", kind="assignment")
    session.commit()


def test_mail_waits_while_smtp_is_down_and_goes_out_once_it_is_back(session: Session, engine, settings,
                                                                    smtp_port: int) -> None:
    settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp_port})
    _queue_some(session)
    sent, failed = deliver(engine, settings)  # nothing listens on the port yet
    assert (sent, failed) == (0, 4)
    session.rollback()
    waiting = session.exec(select(OutboxMessage)).all()
    assert all(m.sent_at is None and m.attempts == 1 and m.last_error for m in waiting)
    assert all(m.next_attempt_at > utcnow() for m in waiting)
    assert deliver(engine, settings) == (0, 0)  # not due again yet

    inbox = Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    server.start()
    try:
        sent, failed = deliver(engine, settings, now=utcnow() + timedelta(minutes=2))
        assert (sent, failed) == (4, 0)
        assert deliver(engine, settings, now=utcnow() + timedelta(hours=2)) == (0, 0)  # each is sent once
    finally:
        server.stop()
    by_address: dict[str, list] = {}
    for message in inbox.messages:
        by_address.setdefault(message["To"], []).append(message)
    assert len(by_address["pi@example.org"]) == 2
    digest = by_address["rev@example.org"]
    assert len(digest) == 1 and digest[0]["Subject"] == "Commons Observatory: 3 new review assignments"
    body = digest[0].get_content()
    assert all(f"Please review {t}." in body for t in "ABC")
    assert [m["Subject"] for m in by_address["other-rev@example.org"]] == ["Review: “D”"]
    session.rollback()  # end this session's read: the loop's commits are what counts
    assert all(m.sent_at is not None for m in session.exec(select(OutboxMessage)))


def test_the_portals_mail_loop_sends_the_outbox(lite_session: Session, lite_engine, lite_settings,
                                                smtp_port: int) -> None:
    settings = lite_settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp_port,
                                                "mail_interval_s": 0.2})
    inbox = Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    server.start()
    stop = threading.Event()
    loop = threading.Thread(target=run_mail_loop, args=(lite_engine, settings, stop))
    loop.start()
    try:
        _queue_some(lite_session)
        deadline = time.monotonic() + 20
        while len(inbox.messages) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(inbox.messages) == 4
    finally:
        stop.set()
        loop.join(10)
        server.stop()


def test_a_line_break_in_a_title_never_reaches_a_header_and_a_bad_message_blocks_no_other(
        session: Session, engine, settings, smtp_port: int) -> None:
    settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp_port})
    titled = outbox.queue(session, "pi@example.org", "Submitted: A\r\nBcc: victim@example.org", "Body.")
    assert titled.subject == "Submitted: A Bcc: victim@example.org"
    # A message written before the fix (or by any other path) with a line break in a header: it fails alone.
    poisoned = OutboxMessage(to_address="pi@example.org", kind="notice", subject="Bad\nSubject", body="x")
    session.add(poisoned)
    outbox.queue(session, "other@example.org", "After it", "Still goes out.")
    session.commit()
    inbox = Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    server.start()
    try:
        assert deliver(engine, settings) == (2, 1)
    finally:
        server.stop()
    session.rollback()
    stuck = session.get(OutboxMessage, poisoned.id, populate_existing=True)
    assert stuck.sent_at is None and "linefeed" in stuck.last_error and stuck.next_attempt_at > utcnow()
    assert sorted(str(m["Subject"]) for m in inbox.messages) == ["After it", "Submitted: A Bcc: victim@example.org"]
    assert all(m["Bcc"] is None for m in inbox.messages)
