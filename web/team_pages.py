"""The portal's pages for a proposal's team and its life after submission: invites, members, the PI role,
withdrawing, and rating the reviews once the decisions are out."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.deps import CurrentUser, OptionalUser, SessionDep, SettingsDep
from service.errors import DomainError
from service.proposals import service as proposals
from service.proposals import team
from service.review import feedback
from service.types import IdPath, Reason, parse
from web.confirm import confirmation, confirmed
from web.render import act, flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)


@router.post("/proposals/{proposal_id}/invites")
async def invite(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep,
                 settings: SettingsDep):
    email = (await form_fields(request)).get("email", "")
    url = f"/proposals/{proposal_id}"
    try:
        row, link = team.invite(session, actor=user, proposal_id=proposal_id, email=email,
                                base_url=settings.base_url, days=settings.invite_days)
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(url)
    session.commit()
    request.session["invite_link"] = {"proposal": proposal_id, "email": row.email, "link": link}
    return redirect(url)


@router.post("/proposals/{proposal_id}/invites/{invite_id}/revoke")
def revoke_invite(proposal_id: IdPath, invite_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    return act(request, session, f"/proposals/{proposal_id}", "Invite withdrawn; its link no longer works.",
               lambda: team.revoke_invite(session, actor=user, proposal_id=proposal_id, invite_id=invite_id))


@router.post("/proposals/{proposal_id}/members/{user_id}/remove")
def remove_member(proposal_id: IdPath, user_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    leaving = user_id == user.id
    url = "/proposals" if leaving else f"/proposals/{proposal_id}"
    return act(request, session, url, "You left the team." if leaving else "Member removed.",
               lambda: team.remove_member(session, actor=user, proposal_id=proposal_id, user_id=user_id))


@router.post("/proposals/{proposal_id}/pi")
async def transfer_pi(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    try:
        new_pi = int(form.get("user_id", ""))
    except ValueError:
        flash(request, "Choose the co-investigator who becomes PI.", "error")
        return redirect(f"/proposals/{proposal_id}")
    return act(request, session, f"/proposals/{proposal_id}", "The PI role is handed on; you are a co-investigator.",
               lambda: team.transfer_pi(session, actor=user, proposal_id=proposal_id, user_id=new_pi))


@router.post("/proposals/{proposal_id}/withdraw")
async def withdraw(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    url = f"/proposals/{proposal_id}"
    try:
        reason = parse(Reason, form.get("reason", ""), "reason")
    except DomainError as exc:
        flash(request, exc.message, "error")
        return redirect(url)
    if not confirmed(form):
        try:
            found = proposals.get_visible(session, actor=user, proposal_id=proposal_id)
        except DomainError as exc:
            flash(request, exc.message, "error")
            return redirect(url)
        return confirmation(request, title=f"Withdraw proposal {proposal_id}", action=f"{url}/withdraw", back=url,
                            button="Yes, withdraw it", fields=form, points=[
                                f"“{found.title or 'Untitled draft'}” is withdrawn for good: it is not reviewed or "
                                "awarded, and cannot be submitted again (a new proposal can).",
                                "Its team sees it as withdrawn" + (f", with your reason: “{reason}”." if reason
                                                                   else ".")])
    return act(request, session, url, "Proposal withdrawn.",
               lambda: proposals.withdraw(session, actor=user, proposal_id=proposal_id, reason=reason))


@router.post("/proposals/{proposal_id}/reviews/{review_id}/rating")
async def rate_review(proposal_id: IdPath, review_id: IdPath, request: Request, user: CurrentUser,
                      session: SessionDep):
    value = (await form_fields(request)).get("helpfulness", "")
    if value not in {"1", "2", "3", "4", "5"}:
        flash(request, "Rate the review from 1 (not helpful) to 5 (very helpful).", "error")
        return redirect(f"/proposals/{proposal_id}")
    return act(request, session, f"/proposals/{proposal_id}", "Thank you: the committee sees how helpful reviews are.",
               lambda: feedback.rate(session, actor=user, proposal_id=proposal_id, review_id=review_id,
                                     helpfulness=int(value)))


@router.get("/invites/{token}")
def invite_page(token: str, request: Request, user: OptionalUser, session: SessionDep):
    """The invitee's page: which proposal, whose, and a button to accept (after signing in)."""
    row, proposal = team.pending_invite(session, token[:100])
    pi = proposals.team(session, proposal.id)
    return render(request, "invite.html", {"token": token, "proposal": proposal, "row": row,
                                           "pi": next((u for u in pi if u.id == proposal.pi_id), None)})


@router.post("/invites/{token}")
def invite_accept(token: str, request: Request, user: CurrentUser, session: SessionDep):
    try:
        proposal = team.accept(session, actor=user, raw=token[:100])
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect("/proposals")
    session.commit()
    flash(request, f"You joined “{proposal.title}” as co-investigator.")
    return redirect(f"/proposals/{proposal.id}")
