"""The archive's public pages: a run's landing page as a data product (identifier, provenance, what is public and
from when, a thumbnail, its files once public) and its citation files."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from service.archive import landing
from service.deps import CurrentUser, OptionalUser, SessionDep
from service.models import Outcome
from service.proposals import outcomes
from service.types import IdPath
from service.wording import plain_message
from web.render import act, flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)


@router.get("/archive/runs/{run_id}")
def run_landing_page(run_id: IdPath, request: Request, user: OptionalUser, session: SessionDep):
    """Anyone: the run as a data product."""
    product = landing.run_landing(session, run_id, user, str(request.base_url))
    return render(request, "run_landing.html", {"product": product})


@router.get("/archive/runs/{run_id}/citation.bib")
def run_bibtex(run_id: IdPath, request: Request, session: SessionDep) -> PlainTextResponse:
    product = landing.run_landing(session, run_id, None, str(request.base_url))
    return PlainTextResponse(product.citation.bibtex, media_type="application/x-bibtex; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="obs-run-{run_id}.bib"'})


@router.get("/archive/runs/{run_id}/CITATION.cff")
def run_cff(run_id: IdPath, request: Request, session: SessionDep) -> PlainTextResponse:
    product = landing.run_landing(session, run_id, None, str(request.base_url))
    return PlainTextResponse(product.citation.cff, media_type="application/x-yaml; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="CITATION.cff"'})


@router.post("/proposals/{proposal_id}/outcomes")
async def add_outcome(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    """A team member records what came of the award."""
    form = {k: v for k, v in (await form_fields(request)).items() if v.strip()}
    url = f"/proposals/{proposal_id}"
    try:
        data = outcomes.OutcomeCreate.model_validate(form)
    except ValidationError as exc:
        flash(request, "; ".join(f"{'.'.join(map(str, e['loc']))}: {plain_message(e)}" if e["loc"]
                                 else plain_message(e) for e in exc.errors()), "error")
        return redirect(url)
    return act(request, session, url, "The outcome is recorded.",
               lambda: outcomes.add(session, user, proposal_id, data))


@router.post("/outcomes/{outcome_id}/delete")
def remove_outcome(outcome_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    outcome = session.get(Outcome, outcome_id)
    url = f"/proposals/{outcome.proposal_id}" if outcome is not None else "/proposals"
    return act(request, session, url, "The outcome is removed.", lambda: outcomes.remove(session, user, outcome_id))
