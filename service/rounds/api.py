"""The rounds of a run that several nodes train together, on the job channel: each worker's door to the
coordinator (service.rounds.service). Every call carries the attempt's token, as the rest of the channel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from service.archive.service import store_for
from service.attempts.api import SHA256_HEADER, BodyReader, CurrentAttempt
from service.deps import SessionDep, SettingsDep
from service.rounds import service as rounds

router = APIRouter(prefix="/job/rounds", tags=["job channel"])


@router.get("", response_model=rounds.RoundView)
def current_round(attempt: CurrentAttempt, session: SessionDep, settings: SettingsDep,
                  after: Annotated[int | None, Query(ge=-1, le=1 << 30)] = None,
                  wait_s: Annotated[float, Query(ge=0, le=rounds.MAX_WAIT_S)] = 0) -> rounds.RoundView:
    """The open round and its global weights (by digest, fetched as an input); with `after`, waits up to `wait_s`
    for a later round. Once the last round has closed: `finished`, and whether this worker makes the outputs."""
    return rounds.view(session, store_for(settings), attempt, after=after, wait_s=wait_s)


@router.put("/base", response_model=rounds.RoundView, status_code=201)
def initial_weights(request: Request, attempt: CurrentAttempt, session: SessionDep, settings: SettingsDep,
                    sha256: Annotated[str, SHA256_HEADER]) -> rounds.RoundView:
    """The first worker's initial weights, which become the run's global weights of round 0 (409 once set)."""
    return rounds.begin(session, store_for(settings), attempt, BodyReader(request), sha256,
                        settings.max_output_bytes)


@router.put("/{number}", response_model=rounds.Taken)
def contribute(number: Annotated[int, Path(ge=0, le=1 << 30)], request: Request, attempt: CurrentAttempt,
               session: SessionDep, settings: SettingsDep, sha256: Annotated[str, SHA256_HEADER],
               samples: Annotated[int, Query(ge=1, le=1 << 40)],
               steps: Annotated[int, Query(ge=1, le=1 << 30)],
               loss: Annotated[float | None, Query(ge=0, le=1e9)] = None) -> rounds.Taken:
    """This worker's contribution to round `number` (jobs.diloco's format); a round that has closed drops it
    (accepted: false) and the worker continues from the newest global weights."""
    return rounds.contribute(session, store_for(settings), attempt, number=number, stream=BodyReader(request),
                             sha256=sha256, samples=samples, steps=steps, loss=loss, limit=settings.max_output_bytes)
