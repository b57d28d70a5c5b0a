"""E-mail, written to the outbox in the transaction of the change it reports; `service.mail.sender` sends it."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlmodel import Session

from service.models import OutboxMessage, User

DIGEST_KINDS = frozenset({"assignment"})  # sent to each address as one message, however many are waiting
CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def header_value(text: str) -> str:
    """A value fit for one header line: line breaks and other control characters (from a proposal's title, say)
    become single spaces, so that no header can be cut short or added to."""
    return CONTROL.sub(" ", text).strip()


def queue(session: Session, to: User | str, subject: str, body: str, *, kind: str = "notice") -> OutboxMessage:
    address = header_value(to.email if isinstance(to, User) else to)
    message = OutboxMessage(to_address=address, kind=kind, subject=header_value(subject)[:300], body=body[:20_000])
    session.add(message)
    session.flush()
    return message


def queue_all(session: Session, people: Iterable[User], subject: str, body: str, *, kind: str = "notice") -> None:
    for person in {p.id: p for p in people}.values():
        queue(session, person, subject, body, kind=kind)
