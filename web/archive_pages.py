"""The archive's public pages: the search over every data product, a run's landing page as a data product
(identifier, provenance, what is public and from when, a thumbnail, its files once public) and its citation files."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from jobs.commons.licenses import FAMILIES
from service.archive import landing
from service.archive.api import ArchiveQuery, page_out
from service.archive.citations import Citation
from service.archive.service import store_for
from service.datasets import service as datasets
from service.deps import CurrentUser, OptionalUser, SessionDep, SettingsDep
from service.modelcards import publishing
from service.modelcards import service as modelcards
from service.models import Outcome
from service.proposals import outcomes
from service.types import IdPath
from service.wording import plain_message
from web.render import act, flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)
FACET_TITLES = {"kind": "Product", "job_kind": "Job kind", "cycle_id": "Cycle", "call_id": "Call",
                "license": "License family", "dataset": "Dataset version", "model": "Model version"}
FACET_PARAMS = {"cycle_id": "cycle", "call_id": "call"}  # facet -> its query parameter, where they differ


@router.get("/archive")
def archive_page(query: ArchiveQuery, request: Request, session: SessionDep):
    """Anyone: search the archive's data products, with facets to narrow by and pages to go on."""
    found = page_out(session, query)
    asked = {k: v for k, v in request.query_params.items() if v and k != "after"}

    def with_param(name: str, value: object) -> str:
        return "/archive?" + urlencode({**asked, name: value})

    def without(name: str) -> str:
        return "/archive?" + urlencode({k: v for k, v in asked.items() if k != name})

    return render(request, "archive.html", {
        "page": found, "asked": asked, "titles": FACET_TITLES, "params": FACET_PARAMS, "with_param": with_param,
        "without": without, "next_url": with_param("after", found.next) if found.next else None,
        "families": FAMILIES})


@router.get("/archive/runs/{run_id}")
def run_landing_page(run_id: IdPath, request: Request, user: OptionalUser, session: SessionDep):
    """Anyone: the run as a data product."""
    product = landing.run_landing(session, run_id, user, str(request.base_url))
    return render(request, "run_landing.html", {"product": product})


def citation_file(citation: Citation, form: str, stem: str) -> PlainTextResponse:
    """A citation as a file to save: BibTeX (`bib`) or CITATION.cff (`cff`)."""
    if form == "bib":
        return PlainTextResponse(citation.bibtex, media_type="application/x-bibtex; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{stem}.bib"'})
    return PlainTextResponse(citation.cff, media_type="application/x-yaml; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="CITATION.cff"'})


@router.get("/archive/runs/{run_id}/citation.bib")
def run_bibtex(run_id: IdPath, request: Request, session: SessionDep) -> PlainTextResponse:
    product = landing.run_landing(session, run_id, None, str(request.base_url))
    return citation_file(product.citation, "bib", f"obs-run-{run_id}")


@router.get("/archive/runs/{run_id}/CITATION.cff")
def run_cff(run_id: IdPath, request: Request, session: SessionDep) -> PlainTextResponse:
    product = landing.run_landing(session, run_id, None, str(request.base_url))
    return citation_file(product.citation, "cff", f"obs-run-{run_id}")


@router.get("/models/{name}/{version}/citation.bib")
def model_bibtex(name: str, version: IdPath, request: Request, session: SessionDep,
                 settings: SettingsDep) -> PlainTextResponse:
    found = modelcards.find(session, name[:80], version)
    cited = publishing.model_citation(session, store_for(settings), found, str(request.base_url))
    return citation_file(cited, "bib", f"obs-model-{found.name}-{found.version}")


@router.get("/models/{name}/{version}/CITATION.cff")
def model_cff(name: str, version: IdPath, request: Request, session: SessionDep,
              settings: SettingsDep) -> PlainTextResponse:
    found = modelcards.find(session, name[:80], version)
    cited = publishing.model_citation(session, store_for(settings), found, str(request.base_url))
    return citation_file(cited, "cff", "")


@router.get("/datasets/{ref}/citation.bib")
def dataset_bibtex(ref: str, request: Request, session: SessionDep) -> PlainTextResponse:
    found = datasets.find(session, ref[:200])
    return citation_file(publishing.dataset_citation(found, str(request.base_url)), "bib",
                         f"obs-dataset-{found.name}-{found.version}")


@router.get("/datasets/{ref}/CITATION.cff")
def dataset_cff(ref: str, request: Request, session: SessionDep) -> PlainTextResponse:
    found = datasets.find(session, ref[:200])
    return citation_file(publishing.dataset_citation(found, str(request.base_url)), "cff", "")


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
