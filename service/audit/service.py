"""The audit log: every decision, override, role change and award, written in the transaction that makes it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from service.errors import Forbidden
from service.models import AuditEntry, Role, User


def record(session: Session, actor: User | None, action: str, subject: str, **detail: Any) -> AuditEntry:
    entry = AuditEntry(actor_id=actor.id if actor else None, action=action, subject=subject, detail=detail)
    session.add(entry)
    session.flush()
    return entry


def entries(session: Session, actor: User, *, limit: int = 500, before_id: int | None = None) -> list[AuditEntry]:
    """The newest entries first (admins)."""
    if not actor.has(Role.admin):
        raise Forbidden("only admins read the audit log")
    query = select(AuditEntry)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(session.exec(query.order_by(AuditEntry.id.desc()).limit(limit)))
