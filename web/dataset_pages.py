"""The portal's dataset pages: every registered dataset version, where its images came from, under which licenses,
by whom, and a contact sheet of them. Public, like the API's /api/datasets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from jobs.partition import MAX_CLUSTERS
from service.archive.service import DOWNLOAD_HEADERS, store_for
from service.datasets import partitions, service
from service.datasets.api import partition_public
from service.datasets.preview import cluster_sheet, contact_sheet
from service.deps import SessionDep, SettingsDep
from service.modelcards.publishing import dataset_citation
from service.types import IdPath
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
    cuts = [partition_public(version, found) for found in partitions.partitions_of(session, version)]
    return render(request, "dataset.html", {"d": version, "ref": f"{version.name}@{version.version}",
                                            "commons": COMMONS, "source": source, "partitions": cuts,
                                            "citation": dataset_citation(version, str(request.base_url))})


@router.get("/datasets/{ref}/sheet.png")
def dataset_sheet(ref: str, session: SessionDep, settings: SettingsDep) -> Response:
    version = service.find(session, ref[:200])
    return _png(contact_sheet(store_for(settings), version))


@router.get("/datasets/{ref}/partitions/{partition_id}/clusters/{cluster}.png")
def cluster_sheet_png(ref: str, partition_id: IdPath, cluster: Annotated[int, Path(ge=0, le=MAX_CLUSTERS - 1)],
                      session: SessionDep,
                      settings: SettingsDep) -> Response:
    version = service.find(session, ref[:200])
    found = partitions.of_version(session, version, partition_id)
    return _png(cluster_sheet(store_for(settings), version, found, cluster))


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png",
                    headers={**DOWNLOAD_HEADERS, "Cache-Control": "public, max-age=86400"})
