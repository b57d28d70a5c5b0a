"""Runs and their outputs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from service.archive import landing
from service.archive import service as archive
from service.archive.ranges import ranged_response
from service.attempts.service import latest_attempt, log_since
from service.deps import AdminUser, CurrentUser, OptionalUser, SessionDep, SettingsDep
from service.runs import families, service
from service.runs.schemas import ArtifactPublic, ChargePublic, FamilyPublic, RunPublic
from service.types import ArtifactName, IdPath

router = APIRouter(tags=["runs"])


def artifact_url(run_id: int, name: str) -> str:
    return f"/api/runs/{run_id}/artifacts/{name}"


@router.get("/runs", response_model=list[RunPublic])
def list_runs(user: CurrentUser, session: SessionDep) -> list[RunPublic]:
    """Your proposals' runs, newest first (every run, for admins): state, progress, attempts and charges."""
    return [service.describe(session, run) for run in service.list_visible(session, actor=user)]


@router.get("/runs/{run_id}", response_model=RunPublic)
def get_run(run_id: IdPath, user: CurrentUser, session: SessionDep) -> RunPublic:
    """State, progress and GPU-seconds of a run: its proposal's members and admins."""
    return service.describe(session, service.get_visible(session, actor=user, run_id=run_id))


@router.get("/families/{group_id}", response_model=FamilyPublic)
def get_family(group_id: IdPath, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> FamilyPublic:
    """A family of experts: each expert's cluster, state, progress and node, the router's and its held-out
    accuracy by noise level: its proposal's members and admins."""
    return families.describe_family(session, families.get_visible(session, actor=user, group_id=group_id),
                                    archive.store_for(settings))


@router.get("/runs/{run_id}/ledger", response_model=list[ChargePublic])
def run_ledger(run_id: IdPath, user: CurrentUser, session: SessionDep) -> list[ChargePublic]:
    """Every GPU-second the run was charged or refunded, entry by entry: its proposal's members and admins."""
    return service.ledger_of(session, service.get_visible(session, actor=user, run_id=run_id))


class LogTail(BaseModel):
    attempt: int | None
    lines: list[str]
    offset: int = 0  # ask with after=offset (and the same attempt) for what comes next


@router.get("/runs/{run_id}/log", response_model=LogTail)
def run_log(run_id: IdPath, user: CurrentUser, session: SessionDep,
            after: Annotated[int, Query(ge=0, le=1 << 50)] = 0,
            attempt_number: Annotated[int | None, Query(alias="attempt", ge=1, le=1 << 20)] = None) -> LogTail:
    """The latest attempt's log as its job sent it (its last 40 lines worth reading); with `after` (the offset
    an earlier answer gave) and that answer's `attempt`, only what arrived since: its proposal's members and
    admins. A newer attempt answers from its beginning."""
    run = service.get_visible(session, actor=user, run_id=run_id)
    attempt = latest_attempt(session, run.id)
    if attempt is None:
        return LogTail(attempt=None, lines=[])
    since = after if attempt_number == attempt.number else 0
    lines, end = log_since(session, attempt.id, since)
    return LogTail(attempt=attempt.number, lines=lines, offset=end)


@router.post("/runs/{run_id}/cancel", response_model=RunPublic)
def cancel_run(run_id: IdPath, user: CurrentUser, session: SessionDep) -> RunPublic:
    """Cancel a run (its PI or an admin)."""
    run = service.request_cancel(session, actor=user, run_id=run_id)
    session.commit()
    return service.describe(session, run)


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactPublic])
def list_artifacts(run_id: IdPath, user: OptionalUser, session: SessionDep) -> list[ArtifactPublic]:
    """A run's outputs with sha256: members during exclusive access, everyone after."""
    return [
        ArtifactPublic(name=a.name, kind=a.kind, sha256=a.sha256, size=a.size, media_type=a.media_type,
                       url=artifact_url(run_id, a.name))
        for a in archive.visible_artifacts(session, actor=user, run_id=run_id)
    ]


@router.get("/runs/{run_id}/artifacts/{name}")
def download_artifact(run_id: IdPath, name: ArtifactName, request: Request, user: OptionalUser, session: SessionDep,
                      settings: SettingsDep) -> Response:
    """Download one output (same access rule as the list); supports HTTP range requests.

    Raster images that really are images are shown in place, and so are analysis reports, as sandboxed documents
    that may run no script; everything else is an attachment, and no download may run script or be sniffed as
    another type."""
    store = archive.store_for(settings)
    artifact = archive.open_artifact(session, actor=user, store=store, run_id=run_id, name=name)
    disposition, served = archive.served_as(artifact, store)
    headers = {"X-Content-SHA256": artifact.sha256, **served}
    path = store.local_path(artifact.sha256)
    if path is not None:
        return FileResponse(path, media_type=artifact.media_type, filename=artifact.name,
                            content_disposition_type=disposition, headers=headers)
    return ranged_response(store, artifact, request.headers.get("range"), disposition, headers)


# ---- the archive's landing page of a run: public metadata, files after the exclusive period, citations --------


class DoiSet(BaseModel):
    doi: str = Field(max_length=200, description="10.NNNN/suffix, or a doi.org link; empty removes it.")


@router.get("/archive/runs/{run_id}", response_model=landing.RunLanding, tags=["archive"])
def run_landing(run_id: IdPath, request: Request, user: OptionalUser, session: SessionDep) -> landing.RunLanding:
    """A succeeded run as a data product (obs:run/ID): provenance and citations at once, to anyone; its files
    linked once the exclusive period is over (or for the team)."""
    return landing.run_landing(session, run_id, user, str(request.base_url))


@router.put("/archive/runs/{run_id}/doi", response_model=landing.RunLanding, tags=["archive"])
def set_run_doi(run_id: IdPath, data: DoiSet, request: Request, admin: AdminUser,
                session: SessionDep) -> landing.RunLanding:
    """Record the DOI registered for a run's outputs (admins)."""
    landing.set_doi(session, admin, run_id, data.doi)
    session.commit()
    return landing.run_landing(session, run_id, admin, str(request.base_url))
