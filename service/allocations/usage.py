"""What an award has used: the sum of its runs' charged GPU-seconds, in one place."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from service.models import Award, Run


def used_gpu_seconds(session: Session, award_id: int) -> float:
    total = session.exec(select(func.coalesce(func.sum(Run.gpu_seconds), 0.0)).where(Run.award_id == award_id)).one()
    return float(total)


def remaining_gpu_seconds(session: Session, award_id: int) -> float:
    award = session.get(Award, award_id)
    return award.gpu_hours * 3600 - used_gpu_seconds(session, award_id)
