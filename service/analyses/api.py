"""The pairs an analysis run shows and people's marks on them: its team and admins read and mark them."""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from PIL import Image
from pydantic import BaseModel, Field

from service.analyses import capacity, followup, marks
from service.archive.service import DOWNLOAD_HEADERS, read_object, store_for
from service.deps import CurrentUser, OptionalUser, SessionDep, SettingsDep
from service.errors import NotFound
from service.models import Verdict
from service.runs.schemas import RunPublic
from service.runs.service import describe
from service.types import IdPath

router = APIRouter(tags=["analyses"])
Seed = Annotated[int, Path(ge=0, le=2**31 - 1)]
Row = Annotated[int, Path(ge=0, le=10_000)]


class MarkIn(BaseModel):
    verdict: Verdict = Field(description="copy, or not_copy")


class FollowUpIn(BaseModel):
    job_plan: dict[str, Any] = Field(description="A replication, extraction or quality plan; its `run` is this run.")


class PairsOut(BaseModel):
    pairs: list[dict[str, Any]]
    agreement: dict[str, Any]
    # The ratio threshold that would best agree with the marks (ratio, agree, pairs, marks); null without any.
    suggestion: dict[str, Any] | None = None


def pairs_out(shown: list[marks.Pair], agreement: marks.Agreement, run_id: int) -> PairsOut:
    suggested = marks.suggestion_from(shown)
    return PairsOut(pairs=[{**asdict(p), "picture_url": f"/api/runs/{run_id}/pairs/{p.row}.png"} for p in shown],
                    agreement={**asdict(agreement), "fraction": agreement.fraction},
                    suggestion=asdict(suggested) if suggested else None)


@router.get("/runs/{run_id}/pairs", response_model=PairsOut)
def list_pairs(run_id: IdPath, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> PairsOut:
    """The pairs a replication search shows (most copy-like first), the automatic verdict, your mark and
    everyone's, and how the automatic verdict agrees with people's. The team and admins."""
    shown, agreement = marks.pairs(session, store_for(settings), user, run_id)
    return pairs_out(shown, agreement, run_id)


@router.put("/runs/{run_id}/pairs/{seed}", response_model=PairsOut)
def mark_pair(run_id: IdPath, seed: Seed, data: MarkIn, user: CurrentUser, session: SessionDep,
              settings: SettingsDep) -> PairsOut:
    """Mark the pair of sample `seed` as a copy or not (again to change your mark). The team and admins."""
    store = store_for(settings)
    marks.mark(session, store, user, run_id, seed, data.verdict)
    session.commit()
    shown, agreement = marks.pairs(session, store, user, run_id)
    return pairs_out(shown, agreement, run_id)


@router.get("/runs/{run_id}/pairs/{row}.png")
def pair_picture(run_id: IdPath, row: Row, user: OptionalUser, session: SessionDep, settings: SettingsDep) -> Response:
    """One shown pair as a picture (the sample left, its nearest training image right): those who may mark the
    run's pairs, and whoever may download its outputs."""
    store = store_for(settings)
    artifact = marks.pairs_sheet(session, store, user, run_id)
    geometry = marks.results_of(session, store, run_id).get("pair_picture", {})
    tile = int(geometry.get("side", 0)) * int(geometry.get("scale", 0))
    with Image.open(io.BytesIO(read_object(store, artifact.sha256))) as sheet:
        if tile <= 0 or (row + 1) * tile > sheet.height:
            raise NotFound(f"run {run_id} shows no pair {row}")
        out = io.BytesIO()
        sheet.crop((0, row * tile, sheet.width, (row + 1) * tile)).save(out, format="PNG")
    return Response(out.getvalue(), media_type="image/png", headers=dict(DOWNLOAD_HEADERS))


@router.post("/runs/{run_id}/analyses", response_model=RunPublic, status_code=201)
def analyse_run(run_id: IdPath, data: FollowUpIn, user: CurrentUser, session: SessionDep) -> RunPublic:
    """Analyse this finished training run on its own award ("analyse this run"): the proposal's team."""
    run = followup.request(session, user, run_id, data.job_plan)
    session.commit()
    return describe(session, run)


@router.get("/analyses/replication", response_model=list[capacity.ReplicationPoint])
def replication_points(user: OptionalUser, session: SessionDep,
                       settings: SettingsDep) -> list[capacity.ReplicationPoint]:
    """Every replication search whose outputs you may read (public ones for anyone), newest first: the model's
    bits per training image beside the share of samples that copied one."""
    return capacity.points(session, store_for(settings), user)
