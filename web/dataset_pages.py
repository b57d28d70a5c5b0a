"""The portal's dataset pages: every registered dataset version, where its images came from, under which licenses,
by whom, and a contact sheet of them. Public, like the API's /api/datasets."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.archive.service import DOWNLOAD_HEADERS, store_for
from service.datasets import service
from service.datasets.preview import contact_sheet
from service.deps import SessionDep, SettingsDep
from web.render import render

router = APIRouter(include_in_schema=False)
COMMONS = "Wikimedia Commons"


@router.get("/datasets")
def datasets_page(request: Request, session: SessionDep):
    return render(request, "datasets.html", {"versions": service.listing(session), "commons": COMMONS})


@router.get("/datasets/{ref}")
def dataset_page(ref: str, request: Request, session: SessionDep):
    version = service.find(session, ref[:200])
    source = "; ".join(f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
                       for key, value in sorted(version.source.items()))
    return render(request, "dataset.html", {"d": version, "ref": f"{version.name}@{version.version}",
                                            "commons": COMMONS, "source": source})


@router.get("/datasets/{ref}/sheet.png")
def dataset_sheet(ref: str, session: SessionDep, settings: SettingsDep) -> Response:
    version = service.find(session, ref[:200])
    return Response(contact_sheet(store_for(settings), version), media_type="image/png",
                    headers={**DOWNLOAD_HEADERS, "Cache-Control": "public, max-age=86400"})
