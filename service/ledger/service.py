"""The GPU-time ledger: credits, debits and refunds in integer GPU-seconds, each written once under its key.

An award is an account, credited when it is made. A run attempt's use is debited as it runs, each debit under a
lock on the account row and clamped to the balance, so no account is ever charged past what it holds. When an
attempt ends, its charge is settled exactly: work kept is charged once, and work a vanished node lost since its
last shipped checkpoint is refunded in the same transaction. Balances are sums of entries, never stored.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from service.db import lock
from service.models import Award, EntryKind, LedgerAccount, LedgerEntry


def open_award_account(session: Session, award: Award) -> LedgerAccount:
    """The award's account, credited with its GPU-hours (once, whatever the retries)."""
    account = session.exec(select(LedgerAccount).where(LedgerAccount.award_id == award.id)).first()
    if account is None:
        account = LedgerAccount(award_id=award.id, name=f"award {award.id}")
        session.add(account)
        session.flush()
    post(session, account_id=account.id, kind=EntryKind.credit, amount=round(award.gpu_hours * 3600),
         key=f"award:{award.id}", note=f"awarded {award.gpu_hours:g} GPU-hours")
    return account


def account_id_for_award(session: Session, award_id: int) -> int:
    account = session.exec(select(LedgerAccount.id).where(LedgerAccount.award_id == award_id)).first()
    if account is None:
        raise LookupError(f"award {award_id} has no ledger account")
    return account


def balance(session: Session, account_id: int) -> int:
    total = session.exec(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                         .where(LedgerEntry.account_id == account_id)).one()
    return int(total)


def award_balance(session: Session, award_id: int) -> int:
    return balance(session, account_id_for_award(session, award_id))


def award_used(session: Session, award_id: int) -> int:
    """GPU-seconds used: debits less refunds."""
    total = session.exec(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.account_id == account_id_for_award(session, award_id),
        LedgerEntry.kind.in_([EntryKind.debit, EntryKind.refund]))).one()
    return -int(total)


def award_standings(session: Session, award_ids: list[int]) -> dict[int, tuple[int, int, int]]:
    """For each award: (credited, used, balance) in GPU-seconds, in one query."""
    rows = session.exec(select(LedgerAccount.award_id, LedgerEntry.kind, func.sum(LedgerEntry.amount))
                        .join(LedgerEntry, LedgerEntry.account_id == LedgerAccount.id)
                        .where(LedgerAccount.award_id.in_(award_ids))
                        .group_by(LedgerAccount.award_id, LedgerEntry.kind)).all()
    sums: dict[int, dict[EntryKind, int]] = {}
    for award_id, kind, total in rows:
        sums.setdefault(award_id, {})[EntryKind(kind)] = int(total)
    out = {}
    for award_id, by_kind in sums.items():
        credited = by_kind.get(EntryKind.credit, 0)
        used = -(by_kind.get(EntryKind.debit, 0) + by_kind.get(EntryKind.refund, 0))
        out[award_id] = (credited, used, credited - used)
    return out


def run_charged(session: Session, run_id: int, attempt: int | None = None) -> int:
    """GPU-seconds charged to a run (or one of its attempts): debits less refunds."""
    query = select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.run_id == run_id)
    if attempt is not None:
        query = query.where(LedgerEntry.attempt == attempt)
    return -int(session.exec(query).one())


def refunded_by_attempt(session: Session, run_id: int) -> dict[int, int]:
    rows = session.exec(select(LedgerEntry.attempt, func.sum(LedgerEntry.amount)).where(
        LedgerEntry.run_id == run_id, LedgerEntry.kind == EntryKind.refund).group_by(LedgerEntry.attempt)).all()
    return {attempt: int(total) for attempt, total in rows if attempt is not None}


def entries_for_run(session: Session, run_id: int) -> list[LedgerEntry]:
    return list(session.exec(select(LedgerEntry).where(LedgerEntry.run_id == run_id).order_by(LedgerEntry.id)))


def post(session: Session, *, account_id: int, kind: EntryKind, amount: int, key: str, run_id: int | None = None,
         attempt: int | None = None, note: str = "") -> LedgerEntry:
    """Write one entry under its idempotency key; the same key again returns the first entry unchanged."""
    existing = session.exec(select(LedgerEntry).where(LedgerEntry.key == key)).first()
    if existing is not None:
        return existing
    entry = LedgerEntry(account_id=account_id, kind=kind, amount=amount, key=key, run_id=run_id, attempt=attempt,
                        note=note[:500])
    session.add(entry)
    session.flush()
    return entry


def debit(session: Session, *, account_id: int, seconds: int, key: str, run_id: int, attempt: int,
          note: str = "") -> int:
    """Charge up to `seconds`, never past the balance; returns what was charged (the first time for this key)."""
    lock(session, LedgerAccount, account_id)
    existing = session.exec(select(LedgerEntry).where(LedgerEntry.key == key)).first()
    if existing is not None:
        return -existing.amount
    amount = max(0, min(int(seconds), balance(session, account_id)))
    if amount:
        post(session, account_id=account_id, kind=EntryKind.debit, amount=-amount, key=key, run_id=run_id,
             attempt=attempt, note=note)
    return amount


def settle(session: Session, *, account_id: int, run_id: int, attempt: int, kept_seconds: int, note: str) -> int:
    """Bring an ended attempt's charge to exactly `kept_seconds` (or the most the balance allows): a final debit for
    what is missing, or a refund of what was charged for work that was lost. Returns the attempt's final charge."""
    lock(session, LedgerAccount, account_id)
    charged = run_charged(session, run_id, attempt)
    if kept_seconds > charged:
        debit(session, account_id=account_id, seconds=kept_seconds - charged, key=f"debit:run-{run_id}:"
              f"attempt-{attempt}:final", run_id=run_id, attempt=attempt, note=note)
    elif kept_seconds < charged:
        post(session, account_id=account_id, kind=EntryKind.refund, amount=charged - kept_seconds,
             key=f"refund:run-{run_id}:attempt-{attempt}", run_id=run_id, attempt=attempt, note=note)
    return run_charged(session, run_id, attempt)


def cycle_returned_s(session: Session, cycle_id: int) -> int:
    """GPU-seconds the cycle's awards left unused at the end of their periods, back in its pool."""
    found = session.exec(select(LedgerAccount).where(LedgerAccount.cycle_id == cycle_id)).first()
    return balance(session, found.id) if found else 0
