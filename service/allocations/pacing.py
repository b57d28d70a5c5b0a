"""Pacing an award over its period (from the award to the end of its exclusive period, a year by default), as
NERSC and ACCESS do: the use against time, drawn as a burn-down; at set points the PI is reminded once when the
award is behind (a quarter of the period passed with under a tenth used, …); at the end of the period what is
left unused returns to the cycle's pool, on the ledger, exactly once; the committee sees which awards are behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from service.audit.service import record
from service.db import lock
from service.ledger import service as ledger
from service.mail import outbox
from service.models import (
    Award,
    AwardReminder,
    Call,
    Cycle,
    EntryKind,
    LedgerAccount,
    LedgerEntry,
    Proposal,
    User,
)
from service.timeutil import utcnow

# (share of the period passed, the share of the award used below which the PI is reminded then)
POINTS = ((0.25, 0.10), (0.5, 0.25), (0.75, 0.50))


@dataclass(frozen=True)
class Pace:
    award: Award
    title: str
    period_share: float  # how much of the period has passed, 0..1
    used_share: float  # how much of the award is used, 0..1
    left_s: int
    behind: bool  # past a point with less used than it asks
    ended: bool

    @property
    def hours_left(self) -> float:
        return self.left_s / 3600


def period_share(award: Award, now: datetime) -> float:
    total = (award.exclusive_until - award.awarded_at).total_seconds()
    if total <= 0:
        return 1.0
    return min(max((now - award.awarded_at).total_seconds() / total, 0.0), 1.0)


def pace(session: Session, award: Award, now: datetime | None = None) -> Pace:
    now = now or utcnow()
    awarded_s = max(round(award.gpu_hours * 3600), 1)
    used = ledger.award_used(session, award.id)
    share = period_share(award, now)
    used_share = min(used / awarded_s, 1.0)
    behind = any(share >= point and used_share < floor for point, floor in POINTS)
    title = session.get(Proposal, award.proposal_id).title
    return Pace(award, title, share, used_share, ledger.award_balance(session, award.id), behind,
                now >= award.exclusive_until)


def burn_down(session: Session, award: Award, now: datetime | None = None) -> list[tuple[float, float]]:
    """(share of the period, GPU-hours left) at the award and after each ledger entry, up to now."""
    now = now or utcnow()
    account = ledger.account_id_for_award(session, award.id)
    left = 0.0
    points: list[tuple[float, float]] = []
    for entry in session.exec(select(LedgerEntry).where(LedgerEntry.account_id == account)
                              .order_by(LedgerEntry.created_at, LedgerEntry.id)):
        left += entry.amount / 3600
        points.append((period_share(award, entry.created_at), left))
    points.append((period_share(award, now), left))
    return points


def cycle_pool(session: Session, cycle_id: int) -> LedgerAccount:
    """The cycle's pool account: what its awards left unused comes back to it."""
    found = session.exec(select(LedgerAccount).where(LedgerAccount.cycle_id == cycle_id)).first()
    if found is None:
        cycle = session.get(Cycle, cycle_id)
        found = LedgerAccount(cycle_id=cycle_id, name=f"cycle {cycle.name}: returned hours")
        session.add(found)
        session.flush()
    return found


def returned_s(session: Session, cycle_id: int) -> int:
    """GPU-seconds the cycle's awards returned unused."""
    return ledger.cycle_returned_s(session, cycle_id)


def _remind(session: Session, award: Award, step: Pace, point: float, floor: float) -> bool:
    """Send the reminder for `point` once (a unique row keeps it so, even with two schedulers)."""
    if session.exec(select(AwardReminder).where(AwardReminder.award_id == award.id,
                                                AwardReminder.point == point)).first():
        return False
    try:
        with session.begin_nested():
            session.add(AwardReminder(award_id=award.id, point=point, used_share=step.used_share))
    except IntegrityError:
        return False
    pi = session.get(User, session.get(Proposal, award.proposal_id).pi_id)
    outbox.queue(session, pi, f"Your award is behind: {step.title}",
                 f"{point:.0%} of the award's period has passed (it ends {award.exclusive_until:%Y-%m-%d}) and "
                 f"{step.used_share:.0%} of its {award.gpu_hours:g} GPU-hours is used (under {floor:.0%}). Queue "
                 f"runs on the award from the proposal's page; at the end of the period the {step.hours_left:.3g} "
                 "GPU-hours left return to the cycle's pool.", kind="pacing")
    return True


def _expire(session: Session, award: Award) -> int:
    """At the end of the period, what is left moves to the cycle's pool: two ledger entries, each once by key."""
    account = ledger.account_id_for_award(session, award.id)
    lock(session, LedgerAccount, account)
    if session.exec(select(LedgerEntry).where(LedgerEntry.key == f"expiry:award-{award.id}")).first():
        return 0
    left = ledger.balance(session, account)
    if left <= 0:
        return 0
    call = session.get(Call, session.get(Proposal, award.proposal_id).call_id)
    pool = cycle_pool(session, call.cycle_id)
    ledger.post(session, account_id=account, kind=EntryKind.expiry, amount=-left, key=f"expiry:award-{award.id}",
                note=f"the period ended on {award.exclusive_until:%Y-%m-%d}: {left} GPU-seconds unused")
    ledger.post(session, account_id=pool.id, kind=EntryKind.returned, amount=left, key=f"return:award-{award.id}",
                note=f"unused by award {award.id}")
    record(session, None, "award.expire", f"award:{award.id}", returned_s=left, cycle=call.cycle_id)
    return left


@dataclass
class PacingReport:
    reminded: int = 0
    expired: int = 0
    returned_s: int = 0


def tick(session: Session, now: datetime | None = None) -> PacingReport:
    """Remind the PIs of awards behind at a point of their period (once each), and return what awards left unused
    at the end of their period to their cycles' pools (once each)."""
    now = now or utcnow()
    report = PacingReport()
    for award in session.exec(select(Award).where(Award.tops_up_award_id.is_(None)).order_by(Award.id)):
        step = pace(session, award, now)
        if step.ended:
            returned = _expire(session, award)
            report.expired += bool(returned)
            report.returned_s += returned
            continue
        for point, floor in POINTS:
            if step.period_share >= point and step.used_share < floor and _remind(session, award, step, point,
                                                                                  floor):
                report.reminded += 1
    return report


def behind(session: Session, now: datetime | None = None) -> list[Pace]:
    """The awards still in their period, those behind first, then by how little they have used."""
    now = now or utcnow()
    found = [pace(session, a, now) for a in session.exec(select(Award).where(Award.tops_up_award_id.is_(None)))]
    return sorted((p for p in found if not p.ended), key=lambda p: (not p.behind, p.used_share - p.period_share))
