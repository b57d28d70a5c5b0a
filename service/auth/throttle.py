"""Sign-in throttling: failed attempts are counted per account and per client address; past a limit within a
window, that account or address is refused for a while, whether or not the account exists.

Failures are committed at once, on their own, so that the refused request's rollback does not forget them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, delete

from service.db import lock
from service.errors import TooManyRequests
from service.models import LoginFailure
from service.timeutil import utcnow


@dataclass(frozen=True)
class Limits:
    per_account: int = 5
    per_address: int = 20
    lockout_minutes: int = 15


def _keys(email: str, address: str | None) -> dict[str, str]:
    keys = {"account": f"account:{email}"}
    if address:
        keys["address"] = f"address:{address}"
    return keys


def check_allowed(session: Session, *, email: str, address: str | None) -> None:
    """Refuse (429) while the account or the address is locked out."""
    now = utcnow()
    for key in _keys(email, address).values():
        row = session.get(LoginFailure, key)
        if row and row.locked_until and row.locked_until > now:
            wait = math.ceil((row.locked_until - now).total_seconds())
            raise TooManyRequests(f"too many failed sign-ins; try again in {math.ceil(wait / 60)} minutes",
                                  retry_after_s=wait)


def record_failure(session: Session, *, email: str, address: str | None, limits: Limits) -> None:
    """Count one failure against the account and the address, lock out what passed its limit, and commit."""
    session.rollback()
    now = utcnow()
    window = timedelta(minutes=limits.lockout_minutes)
    for kind, key in _keys(email, address).items():
        try:
            with session.begin_nested():  # the first failure makes the row; a concurrent one finds it made
                session.add(LoginFailure(key=key, window_started_at=now))
        except IntegrityError:
            pass
        row = lock(session, LoginFailure, key)
        if now - row.window_started_at > window:
            row.failures, row.window_started_at = 0, now
        row.failures += 1
        if row.failures >= (limits.per_account if kind == "account" else limits.per_address):
            row.locked_until = now + window
        session.add(row)
    session.commit()


def clear_account(session: Session, *, email: str) -> None:
    session.exec(delete(LoginFailure).where(LoginFailure.key == f"account:{email}"))
