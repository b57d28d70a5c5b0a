"""What review makes public at once: the accepted proposals' titles, abstracts, teams and awarded hours."""

from __future__ import annotations

from sqlmodel import Session, select

from service.models import Award, Call, Proposal, ProposalState
from service.proposals.outcomes import listed, to_public
from service.proposals.service import team
from service.review.committee import RankRow
from service.review.schemas import AcceptedPublic, RankRowPublic, ReviewerReview


def accepted(session: Session, limit: int = 500) -> list[AcceptedPublic]:
    rows = session.exec(select(Proposal, Award, Call).join(Award, Award.proposal_id == Proposal.id)
                        .join(Call, Call.id == Proposal.call_id)
                        .where(Proposal.state == ProposalState.accepted)
                        .order_by(Award.awarded_at.desc()).limit(limit))
    return [AcceptedPublic(proposal_id=p.id, call_title=c.title, title=p.title, abstract=p.abstract,
                           team=[u.name for u in team(session, p.id)], awarded_gpu_hours=a.gpu_hours,
                           awarded_at=a.awarded_at, outcomes=[to_public(o) for o in listed(session, p.id)])
            for p, a, c in rows]


def rank_row_public(row: RankRow) -> RankRowPublic:
    r = row.ranked
    return RankRowPublic(
        position=r.position, proposal_id=row.proposal.id, title=row.proposal.title, state=row.proposal.state,
        team=[u.name for u in row.team], requested_gpu_hours=row.proposal.requested_gpu_hours, score=r.score,
        raw_mean=r.raw_mean, reviews=r.reviews, triaged=r.triaged, feasibility=row.feasibility,
        awarded_gpu_hours=row.award.gpu_hours if row.award else None,
        priority=row.award.priority if row.award else None,
        panel=[ReviewerReview(reviewer_id=u.id, reviewer_name=u.name, state=a.state, conflict_reason=a.conflict_reason,
                              grade=rv.grade if rv else None, expertise=rv.expertise if rv else None,
                              for_committee=rv.for_committee if rv else None, for_pi=rv.for_pi if rv else None)
               for u, a, rv in row.reviews])
