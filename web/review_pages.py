"""The portal's review pages: the reviewer's queue and review form, the chair's ranking and award table, the
public list of accepted proposals, the committee's reviewer record and the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError

from service.allocations.service import award_proposal, decline_proposal
from service.audit.service import entries
from service.calls import service as calls
from service.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from service.errors import DomainError
from service.mail.sender import waiting
from service.models import CallKind, Expertise, PriorityClass, ProposalState, Role, User
from service.review import assignments, committee, packets, public, reviews
from service.review.reviews import ReviewCreate
from service.timeutil import utcnow
from service.types import IdPath, Reason, gpu_hours, parse
from web.confirm import confirmation, confirmed
from web.forms import field_errors
from web.render import act, flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)


@router.get("/review")
def review_queue(request: Request, user: CurrentUser, session: SessionDep):
    rows = [packets.teaser(session, a) for a in assignments.queue_of(session, user)]
    now = utcnow()
    bidding = [c for c in calls.list_calls(session) if c.kind == CallKind.regular and c.closes_at <= now
               and c.review_started_at is None] if user.has(Role.reviewer) else []
    return render(request, "review_queue.html", {"rows": rows, "bidding": bidding})


def _review_form(request: Request, session, user: User, assignment_id: int, errors: dict[str, str] | None = None,
                 values: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    shown = packets.packet(session, assignments.own_assignment(session, user, assignment_id))
    return render(request, "review.html", {"p": shown, "errors": errors or {}, "values": values or {},
                                           "expertise": list(Expertise)}, status_code=422 if errors else 200)


@router.get("/review/{assignment_id}")
def review_page(assignment_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    return _review_form(request, session, user, assignment_id)


@router.post("/review/{assignment_id}/accept")
def review_accept(assignment_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    return act(request, session, f"/review/{assignment_id}", "Accepted: the proposal's packet is below.",
               lambda: assignments.accept(session, actor=user, assignment_id=assignment_id))


@router.post("/review/{assignment_id}/conflict")
async def review_conflict(assignment_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    reason = (await form_fields(request)).get("reason", "").strip()
    if not reason:
        flash(request, "Say briefly what the conflict is (the committee reads it; the team never does).", "error")
        return redirect(f"/review/{assignment_id}")
    return act(request, session, "/review", "Conflict declared; the proposal goes to another reviewer.",
               lambda: assignments.declare_conflict(session, actor=user, assignment_id=assignment_id,
                                                    reason=reason[:1000]))


@router.post("/review/{assignment_id}")
async def review_submit(assignment_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    try:
        data = ReviewCreate.model_validate({k: form.get(k, "") for k in ("grade", "expertise", "for_committee",
                                                                          "for_pi")})
    except ValidationError as exc:
        return _review_form(request, session, user, assignment_id, errors=field_errors(exc), values=form)
    return act(request, session, f"/review/{assignment_id}", "Review saved. You may revise it until the decisions "
               "are released.", lambda: reviews.submit(session, actor=user, assignment_id=assignment_id, data=data))


# ---- the chair ---------------------------------------------------------------------------------------------


@router.get("/calls/{call_id}/ranking")
def ranking_page(call_id: IdPath, request: Request, admin: AdminUser, session: SessionDep):
    call = calls.get_call(session, call_id)
    rows = committee.table(session, actor=admin, call_id=call_id)
    awarded = calls.awarded_gpu_hours(session, call.id)
    donated = calls.donor_awarded_gpu_hours(session, call.id)
    claims = [row for row in rows if row.proposal.donor_claim] if call.donor_share else []
    return render(request, "ranking.html", {
        "call": call, "rows": rows, "awarded": awarded, "left": calls.left_to_award(session, call),
        "donor": {"reserved": call.capacity_gpu_hours * call.donor_share, "awarded": donated, "claims": len(claims)}
        if call.donor_share else None,
        "shortfalls": assignments.shortfalls(session, call) if call.review_started_at else {},
        "closed": not calls.is_open(call)})


@router.post("/calls/{call_id}/review")
def ranking_start(call_id: IdPath, request: Request, admin: AdminUser, session: SessionDep):
    url = f"/calls/{call_id}/ranking"
    try:
        started = assignments.start_review(session, actor=admin, call_id=call_id)
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(url)
    session.commit()
    short = f"; {len(started.shortfalls)} proposals have too few eligible reviewers" if started.shortfalls else ""
    flash(request, f"Review started: {started.proposals} proposals, {started.assignments} assignments{short}.")
    return redirect(url)


@router.post("/calls/{call_id}/release")
async def ranking_release(call_id: IdPath, request: Request, admin: AdminUser, session: SessionDep,
                          settings: SettingsDep):
    back = f"/calls/{call_id}/ranking"
    told = "every team is told by e-mail" if settings.smtp_host else \
        "every team's e-mail waits in the outbox: no SMTP server is set (OBSERVATORY_SMTP_HOST)"
    if not confirmed(await form_fields(request)):
        rows = committee.table(session, actor=admin, call_id=call_id)
        undecided = [r for r in rows if r.proposal.state == ProposalState.under_review]
        accepted = [r for r in rows if r.proposal.state == ProposalState.accepted]
        points = [f"{len(accepted)} awarded proposal{'s' if len(accepted) != 1 else ''} stand"
                  f"{'s' if len(accepted) == 1 else ''}; {told}, with its grade band and the comments for it."]
        points += [f"Declined: #{r.ranked.position} “{r.proposal.title}”"
                   + (" (triaged)" if r.ranked.triaged else "") for r in undecided]
        lowest_award = max((a.ranked.position for a in accepted), default=0)
        warnings = [f"#{r.ranked.position} “{r.proposal.title}” has no decision though it is "
                    + ("ranked above an awarded proposal" if r.ranked.position < lowest_award
                       else "above the triage line") + ": releasing declines it."
                    for r in undecided if r.ranked.position < lowest_award or not r.ranked.triaged]
        return confirmation(request, title="Release the decisions", action=f"/calls/{call_id}/release", back=back,
                            button="Yes, release the decisions", points=points, warnings=warnings)
    return act(request, session, back, f"Decisions released; {told}.",
               lambda: committee.release(session, actor=admin, call_id=call_id))


def _back(form: dict[str, str], proposal_id: int) -> str:
    target = form.get("next", "")
    return target if target.startswith("/calls/") and target.endswith("/ranking") else f"/proposals/{proposal_id}"


@router.post("/proposals/{proposal_id}/award")
async def proposal_award(proposal_id: IdPath, request: Request, admin: AdminUser, session: SessionDep,
                         settings: SettingsDep):
    form = await form_fields(request)
    url = _back(form, proposal_id)
    try:
        hours = gpu_hours(form.get("gpu_hours", ""))
        priority = parse(PriorityClass, form.get("priority", "B"), "priority")
        reason = parse(Reason, form.get("reason", ""), "reason")
    except DomainError as exc:
        flash(request, exc.message, "error")
        return redirect(url)
    return act(request, session, url, f"Awarded {hours:g} GPU-hours in class {priority} to proposal {proposal_id}.",
               lambda: award_proposal(session, actor=admin, proposal_id=proposal_id, gpu_hours=hours,
                                      priority=priority, gpus_per_run=max(settings.gpus_per_run, 1), reason=reason))


@router.post("/proposals/{proposal_id}/decline")
async def proposal_decline(proposal_id: IdPath, request: Request, admin: AdminUser, session: SessionDep):
    form = await form_fields(request)
    return act(request, session, _back(form, proposal_id), f"Proposal {proposal_id} declined.",
               lambda: decline_proposal(session, actor=admin, proposal_id=proposal_id,
                                        reason=parse(Reason, form.get("reason", ""), "reason")))


@router.get("/accepted")
def accepted_page(request: Request, session: SessionDep):
    return render(request, "accepted.html", {"rows": public.accepted(session)})


@router.get("/reviewers")
def reviewers_page(request: Request, admin: AdminUser, session: SessionDep):
    return render(request, "reviewers.html", {"stats": committee.reviewer_stats(session, actor=admin)})


@router.get("/audit")
def audit_page(request: Request, admin: AdminUser, session: SessionDep):
    rows = entries(session, admin)
    people = {u.id: u for u in (session.get(User, i) for i in {e.actor_id for e in rows if e.actor_id}) if u}
    return render(request, "audit.html", {"rows": rows, "people": people, "outbox_waiting": waiting(session)})
