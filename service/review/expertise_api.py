"""Expertise in the JSON API: reviewers bid on a closed call's proposals; the chair sees the assignments matching
would make, with each pair's score and each reviewer's record, and forces or avoids a pair before review starts."""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlmodel import select

from service.deps import AdminUser, CurrentUser, SessionDep
from service.errors import Forbidden
from service.models import Bid, Proposal, ProposalMember, ProposalState, ReviewBid, Role
from service.review import committee, expertise
from service.types import IdInt, IdPath

router = APIRouter(tags=["review"])


class BidIn(BaseModel):
    bid: Bid


class BidOut(BaseModel):
    proposal_id: int
    bid: Bid


class BiddingRow(BaseModel):
    """A proposal as a reviewer sees it to bid: no team (the review may be dual-anonymous)."""

    proposal_id: int
    title: str
    abstract: str
    subject: str
    keywords: list[str]
    my_bid: Bid | None


class ChoiceIn(BaseModel):
    proposal_id: IdInt
    reviewer_id: IdInt
    choice: Literal["force", "avoid"] | None


class ProposedOut(BaseModel):
    proposal_id: int
    title: str
    reviewer_id: int
    reviewer: str
    score: float
    forced: bool
    versus_panel: float | None  # the reviewer's record, for the chair to weigh
    turnaround_days: float | None


class MatchingOut(BaseModel):
    pairs: list[ProposedOut]
    shortfalls: dict[int, int]


@router.get("/calls/{call_id}/bidding", response_model=list[BiddingRow])
def bidding(call_id: IdPath, user: CurrentUser, session: SessionDep) -> list[BiddingRow]:
    """A closed call's submitted proposals to bid on, with your bids, until its review starts (reviewers)."""
    if not user.has(Role.reviewer):
        raise Forbidden("only reviewers bid")
    call = expertise.bidding_open(session, call_id)
    mine = {b.proposal_id: b.bid for b in session.exec(select(ReviewBid).where(ReviewBid.call_id == call.id,
                                                                               ReviewBid.reviewer_id == user.id))}
    own = set(session.exec(select(ProposalMember.proposal_id).where(ProposalMember.user_id == user.id)))
    found = session.exec(select(Proposal).where(Proposal.call_id == call.id,
                                                Proposal.state == ProposalState.submitted).order_by(Proposal.id))
    return [BiddingRow(proposal_id=p.id, title=p.title, abstract=p.abstract, subject=p.subject, keywords=p.keywords,
                       my_bid=mine.get(p.id)) for p in found if p.id not in own]


@router.put("/review/bids/{proposal_id}", response_model=BidOut)
def place_bid(proposal_id: IdPath, data: BidIn, user: CurrentUser, session: SessionDep) -> BidOut:
    """Bid on a proposal: eager, willing or not my field (reviewers, between the deadline and the review)."""
    made = expertise.bid(session, user, proposal_id, data.bid)
    session.commit()
    return BidOut(proposal_id=made.proposal_id, bid=made.bid)


@router.get("/calls/{call_id}/matching", response_model=MatchingOut)
def matching(call_id: IdPath, admin: AdminUser, session: SessionDep) -> MatchingOut:
    """The assignments starting the review would make now: each pair's score (shared keywords, plus the bid), the
    chair's forced pairs, each reviewer's record against the panel and turnaround, and the shortfalls (chair)."""
    pairs, short = expertise.preview(session, admin, call_id)
    record = {s.reviewer.id: s for s in committee.reviewer_stats(session, actor=admin)}
    return MatchingOut(pairs=[ProposedOut(**asdict(p), versus_panel=getattr(record.get(p.reviewer_id), "versus_panel",
                                                                            None),
                                          turnaround_days=getattr(record.get(p.reviewer_id), "turnaround_days", None))
                              for p in pairs], shortfalls=short)


@router.put("/calls/{call_id}/matching/choices", response_model=MatchingOut)
def choose(call_id: IdPath, data: ChoiceIn, admin: AdminUser, session: SessionDep) -> MatchingOut:
    """Force a reviewer onto a proposal, keep one off it, or take the choice back (null), before the review starts
    (chair; audited). A conflict cannot be forced."""
    expertise.choose(session, admin, call_id, data.proposal_id, data.reviewer_id, data.choice)
    session.commit()
    return matching(call_id, admin, session)
