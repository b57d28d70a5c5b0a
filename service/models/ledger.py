"""The GPU-time ledger: append-only entries in integer GPU-seconds per account; balances are sums, never stored."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class EntryKind(StrEnum):
    credit = "credit"  # an award or a supplement
    debit = "debit"  # a run attempt's use
    refund = "refund"  # use given back (work a vanished node lost)
    expiry = "expiry"  # what an award left unused at the end of its period, taken from it
    returned = "returned"  # … and given back to its cycle's pool


class LedgerAccount(SQLModel, table=True):
    __tablename__ = "ledger_accounts"

    id: int | None = Field(default=None, primary_key=True)
    award_id: int | None = Field(default=None, foreign_key="awards.id", unique=True)
    cycle_id: int | None = Field(default=None, foreign_key="cycles.id", unique=True)  # a cycle's pool
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class AwardReminder(SQLModel, table=True):
    """A pacing reminder sent to an award's PI, once per point of its period (service.allocations.pacing)."""

    __tablename__ = "award_reminders"
    __table_args__ = (UniqueConstraint("award_id", "point", name="uq_reminder_once"),)

    id: int | None = Field(default=None, primary_key=True)
    award_id: int = Field(foreign_key="awards.id", index=True)
    point: float  # the share of the period passed when it was due
    used_share: float  # the share of the award used by then
    sent_at: datetime = Field(default_factory=utcnow)


class LedgerEntry(SQLModel, table=True):
    """Credits are positive, debits negative, refunds positive; `key` makes each entry happen once."""

    __tablename__ = "ledger_entries"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="ledger_accounts.id", index=True)
    kind: EntryKind = Field(sa_type=enum_column(EntryKind, 10))
    amount: int
    key: str = Field(max_length=200, unique=True)
    run_id: int | None = Field(default=None, foreign_key="runs.id", index=True)
    attempt: int | None = None
    note: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow)
