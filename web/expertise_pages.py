"""Expertise in the portal: a reviewer bids on a closed call's proposals; the chair sees the assignments matching
would make, with scores and each reviewer's record, and swaps a reviewer before the review starts."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.calls import service as calls
from service.deps import AdminUser, CurrentUser, SessionDep
from service.errors import DomainError, Invalid
from service.models import Bid
from service.review import assignments, committee, expertise
from service.review.expertise_api import bidding
from service.types import IdPath
from web.render import act, flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)
BID_WORDS = {Bid.eager: "Eager", Bid.willing: "Willing", Bid.not_my_field: "Not my field"}


@router.get("/calls/{call_id}/bidding")
def bidding_page(call_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    """Reviewers: the call's proposals (titles, abstracts, subjects, keywords; never the team) and their bids."""
    return render(request, "bidding.html", {"call": calls.get_call(session, call_id), "words": BID_WORDS,
                                            "rows": bidding(call_id, user, session)})


@router.post("/calls/{call_id}/bidding/{proposal_id}")
async def bid_submit(call_id: IdPath, proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    try:
        value = Bid(form.get("bid", ""))
    except ValueError:
        flash(request, "bid: eager, willing or not my field", "error")
        return redirect(f"/calls/{call_id}/bidding")
    return act(request, session, f"/calls/{call_id}/bidding", f"Bid saved: {BID_WORDS[value].lower()}.",
               lambda: expertise.bid(session, user, proposal_id, value))


@router.get("/calls/{call_id}/matching")
def matching_page(call_id: IdPath, request: Request, admin: AdminUser, session: SessionDep):
    """The chair: who would review what if the review started now, why (scores), and each reviewer's record."""
    call = calls.get_call(session, call_id)
    try:
        pairs, short = expertise.preview(session, admin, call_id)
    except DomainError as exc:
        flash(request, exc.message, "error")
        return redirect(f"/calls/{call_id}/ranking")
    record = {s.reviewer.id: s for s in committee.reviewer_stats(session, actor=admin)}
    panel = assignments.reviewers(session)
    return render(request, "matching.html", {"call": call, "pairs": pairs, "short": short, "record": record,
                                             "panel": panel})


@router.post("/calls/{call_id}/matching")
async def matching_choose(call_id: IdPath, request: Request, admin: AdminUser, session: SessionDep):
    """Swap: keep one reviewer off a proposal and put another on it (or take a choice back)."""
    form = await form_fields(request)
    url = f"/calls/{call_id}/matching"

    def swap() -> None:
        if not form.get("proposal_id", "").isdigit():
            raise Invalid("proposal_id: which proposal")
        proposal = int(form["proposal_id"])
        off, on = form.get("off", ""), form.get("on", "")
        if off.isdigit():
            expertise.choose(session, admin, call_id, proposal, int(off), "avoid")
        if on.isdigit():
            expertise.choose(session, admin, call_id, proposal, int(on), "force")

    return act(request, session, url, "The assignments are changed: see them below.", swap)
