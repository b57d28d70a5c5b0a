"""The archive's public pages: a run's landing page as a data product (identifier, provenance, what is public and
from when, a thumbnail, its files once public) and its citation files."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from service.archive import landing
from service.deps import OptionalUser, SessionDep
from service.types import IdPath
from web.render import render

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
