"""E-mail, written to the outbox in the transaction of the change it reports; `service.mail.sender` sends it."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session

from service.models import OutboxMessage, User

DIGEST_KINDS = frozenset({"assignment"})  # sent to each address as one message, however many are waiting


def queue(session: Session, to: User | str, subject: str, body: str, *, kind: str = "notice") -> OutboxMessage:
    address = to.email if isinstance(to, User) else to
    message = OutboxMessage(to_address=address, kind=kind, subject=subject[:300], body=body[:20_000])
    session.add(message)
    session.flush()
    return message


def queue_all(session: Session, people: Iterable[User], subject: str, body: str, *, kind: str = "notice") -> None:
    for person in {p.id: p for p in people}.values():
        queue(session, person, subject, body, kind=kind)
