"""What the observatory records about itself: the audit log, proposals' state changes, and the e-mail outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from service.timeutil import utcnow


class AuditEntry(SQLModel, table=True):
    """One decision, override, role change or award: append-only, read by admins."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor_id: int | None = Field(default=None, foreign_key="users.id")
    action: str = Field(max_length=60, index=True)
    subject: str = Field(max_length=60)  # "proposal:12", "user:3", "call:2"
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ProposalEvent(SQLModel, table=True):
    """A proposal's change of state: who, when, from, to and why."""

    __tablename__ = "proposal_events"

    id: int | None = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    actor_id: int | None = Field(default=None, foreign_key="users.id")
    from_state: str = Field(max_length=20)
    to_state: str = Field(max_length=20)
    reason: str = Field(default="", max_length=2000)
    at: datetime = Field(default_factory=utcnow)


class OutboxMessage(SQLModel, table=True):
    """An e-mail written in the same transaction as the change it reports, sent later by the mail loop.

    Messages of kind `assignment` to one address are sent together as one digest.
    """

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    to_address: str = Field(max_length=320, index=True)
    kind: str = Field(max_length=20)
    subject: str = Field(max_length=300)
    body: str = Field(max_length=20_000)
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = Field(default=None, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str = Field(default="", max_length=500)
