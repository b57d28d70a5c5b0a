"""Phase II in the portal: a team queues further runs and sweeps on its award (a new plan, or an earlier run's
plan copied and changed), the committee decides change requests, and a sweep's runs are compared on one page."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from sqlmodel import select

from service.allocations import pacing, phase2
from service.allocations.phase2_api import award_out
from service.deps import AdminUser, CurrentUser, SessionDep
from service.errors import DomainError, Invalid
from service.models import Proposal, Run
from service.runs.families import get_visible
from service.types import MAX_ID, IdPath
from web import charts
from web.forms import comma_list
from web.render import act, flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)


def sweep_values(text: str) -> list[Any]:
    """Comma-separated values, each read as JSON where it is (numbers, true/false) and as text otherwise."""
    values: list[Any] = []
    for part in comma_list(text):
        try:
            values.append(json.loads(part))
        except ValueError:
            values.append(part)
    return values


def _form_page(request: Request, session, user, award_id: int, values: dict[str, str],  # noqa: ANN001
               error: str | None = None, status_code: int = 200):
    award = phase2.visible_award(session, user, award_id)
    return render(request, "award_queue.html", {
        "a": award_out(session, award), "proposal": session.get(Proposal, award.proposal_id), "values": values,
        "error": error, "chart": charts.burn_down(pacing.burn_down(session, award), award.gpu_hours)},
        status_code=status_code)


@router.get("/awards/{award_id}/queue")
def queue_page(award_id: IdPath, request: Request, user: CurrentUser, session: SessionDep,
               copy: int | None = Query(None, ge=1, le=MAX_ID)):
    """The team: the award's standing and a form to queue a run, a copy of an earlier run's plan to start from."""
    award = phase2.visible_award(session, user, award_id)
    source = session.get(Run, copy) if copy else None
    if source is None or source.award_id != award.id:
        source = session.exec(select(Run).where(Run.award_id == award.id).order_by(Run.id.desc())).first()
    plan = {"kind": source.job_kind, **source.job_plan} if source else {"kind": "train"}
    return _form_page(request, session, user, award_id, {"job_plan": json.dumps(plan, indent=2),
                                                         "copied": str(source.id) if source else ""})


@router.post("/awards/{award_id}/queue")
async def queue_submit(award_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    try:
        try:
            plan = json.loads(form.get("job_plan", ""))
        except ValueError as exc:
            raise Invalid(f"job_plan: not JSON ({exc})") from None
        field = form.get("sweep_field", "").strip()
        sweep = {"field": field, "values": sweep_values(form.get("sweep_values", ""))} if field else None
        queued = phase2.queue_runs(session, user, award_id, plan, sweep=sweep, reason=form.get("reason", ""))
    except DomainError as exc:
        session.rollback()
        return _form_page(request, session, user, award_id, form, exc.message, exc.status_code)
    session.commit()
    if queued.change is not None:
        flash(request, f"Change request {queued.change.id} is with the committee: "
                       + "; ".join(queued.change.beyond) + ".")
        return redirect("/change-requests")
    flash(request, f"Queued run{'s' if len(queued.runs) > 1 else ''} " + ", ".join(str(r.id) for r in queued.runs)
          + " on the award.")
    return redirect(f"/sweeps/{queued.sweep.id}" if queued.sweep else f"/proposals/{queued.runs[0].proposal_id}")


@router.get("/awards")
def awards_page(request: Request, admin: AdminUser, session: SessionDep):
    """The committee: every award in its period, with its pace; those behind first."""
    return render(request, "awards.html", {"rows": pacing.behind(session), "points": pacing.POINTS})


@router.get("/change-requests")
def changes_page(request: Request, user: CurrentUser, session: SessionDep):
    """Admins: every change request, to decide; a team's members: their own and what became of them."""
    found = phase2.changes(session, user)
    titles = {p.id: p.title for p in session.exec(select(Proposal).where(
        Proposal.id.in_({c.proposal_id for c in found})))}
    return render(request, "change_requests.html", {"changes": found, "titles": titles})


@router.post("/change-requests/{change_id}/decide")
async def decide_change(change_id: IdPath, request: Request, admin: AdminUser, session: SessionDep):
    form = await form_fields(request)
    approve = form.get("decision") == "approve"
    done = f"Change request {change_id} {'approved' if approve else 'refused'}."
    return act(request, session, "/change-requests", done, lambda: phase2.decide_change(
        session, admin, change_id, approve=approve, note=form.get("note", "")))


@router.get("/sweeps/{group_id}")
def sweep_page(group_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    """The team, admins: a sweep's runs side by side."""
    group = get_visible(session, actor=user, group_id=group_id, kind="sweep")
    return render(request, "sweep.html", {"g": group, "rows": phase2.sweep_rows(session, group),
                                          "proposal": session.get(Proposal, group.proposal_id)})
