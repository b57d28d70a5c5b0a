"""The mail loop's work: send what waits in the outbox through SMTP, and keep what could not be sent.

A message that fails stays in the outbox with its error and is tried again later (30 s, then doubling, up to an
hour), so nothing is lost while the SMTP server is down, and a message that cannot be composed or sent never holds
up the others. Messages of a digest kind waiting for one address go out as one e-mail.
Each group is claimed (its retry time pushed past the send) before it is sent, so that two portal processes
running the loop never send the same message twice.
"""

from __future__ import annotations

import logging
import smtplib
import threading
from datetime import datetime, timedelta
from email.message import EmailMessage
from itertools import groupby

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.config import Settings
from service.db import writer
from service.mail.outbox import DIGEST_KINDS
from service.models import OutboxMessage
from service.timeutil import utcnow

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(hours=1)
CLAIM = timedelta(minutes=5)


def _compose(settings: Settings, group: list[OutboxMessage]) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"] = settings.mail_from, group[0].to_address
    if len(group) == 1:
        message["Subject"], body = group[0].subject, group[0].body
    else:
        message["Subject"] = f"Commons Observatory: {len(group)} new review assignments"
        body = "\n\n".join(f"— {m.subject}\n{m.body}" for m in group)
    message.set_content(body)
    return message


def _groups(due: list[OutboxMessage]) -> list[list[OutboxMessage]]:
    singles = [[m] for m in due if m.kind not in DIGEST_KINDS]
    digests = sorted((m for m in due if m.kind in DIGEST_KINDS), key=lambda m: (m.to_address, m.kind, m.id))
    return singles + [list(g) for _, g in groupby(digests, key=lambda m: (m.to_address, m.kind))]


def _send(settings: Settings, message: EmailMessage) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=15) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        smtp.send_message(message)


def deliver(engine: Engine, settings: Settings, *, now: datetime | None = None, limit: int = 200) -> tuple[int, int]:
    """Send what is due; returns (e-mails sent, e-mails that failed and wait for a retry)."""
    if not settings.smtp_host:
        return 0, 0
    now = now or utcnow()
    sent = failed = 0
    with Session(writer(engine), expire_on_commit=False) as session:
        due = list(session.exec(select(OutboxMessage).where(OutboxMessage.sent_at.is_(None),
                                                            OutboxMessage.next_attempt_at <= now)
                                .order_by(OutboxMessage.id).limit(limit)))
        session.commit()
        for group in _groups(due):
            ids = [m.id for m in group]
            claimed = session.exec(update(OutboxMessage).where(
                OutboxMessage.id.in_(ids), OutboxMessage.sent_at.is_(None), OutboxMessage.next_attempt_at <= now)
                .values(next_attempt_at=now + CLAIM)).rowcount
            session.commit()
            if claimed != len(ids):
                continue  # another loop has (some of) it
            try:
                _send(settings, _compose(settings, group))
            except Exception as exc:  # whatever is wrong with this message, the ones behind it still go out
                failed += 1
                for m in group:
                    m.attempts += 1
                    m.next_attempt_at = now + min(timedelta(seconds=30 * 2 ** (m.attempts - 1)), MAX_BACKOFF)
                    m.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    session.add(m)
            else:
                sent += 1
                for m in group:
                    m.sent_at, m.attempts = utcnow(), m.attempts + 1
                    session.add(m)
            session.commit()
    return sent, failed


def waiting(session: Session) -> int:
    """How many messages wait to be sent."""
    return session.exec(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))).one()


def run_mail_loop(engine: Engine, settings: Settings, stop: threading.Event) -> None:
    """Send the outbox every `mail_interval_s` until `stop` is set."""
    while not stop.is_set():
        try:
            deliver(engine, settings)
        except Exception:  # a broken loop must not stop the portal; the next pass tries again
            log.exception("mail delivery failed")
        stop.wait(settings.mail_interval_s)
