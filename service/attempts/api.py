"""The job channel: the only door a job on a pool node has into the observatory.

Every call carries the attempt's own bearer token (`att_…`), which the scheduler hands the job when it submits it
and which dies when the attempt ends. It reaches this attempt's inputs and outputs and nothing else: no user
route accepts it, and these routes accept no user's token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio.from_thread
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from service.archive.service import store_for
from service.archive.store import SHA256
from service.attempts import channel
from service.attempts.schemas import Control, JobEnd, JobHello, JobPlanOut, LogChunk, Received
from service.attempts.service import attempt_for_token
from service.deps import SessionDep, SettingsDep
from service.errors import Invalid, NotFound, Unauthenticated
from service.models import RunAttempt
from service.types import ArtifactName

router = APIRouter(prefix="/job", tags=["job channel"])
SHA256_HEADER = Header(alias="X-Content-SHA256", pattern=r"^[0-9a-f]{64}$",
                       description="sha256 of the body, hex; the body is refused unless it matches.")


def get_attempt(request: Request, session: SessionDep) -> RunAttempt:
    header = request.headers.get("authorization", "")
    attempt = attempt_for_token(session, header[7:].strip()) if header.lower().startswith("bearer ") else None
    if attempt is None:
        raise Unauthenticated("this call needs a live run attempt's token")
    return attempt


CurrentAttempt = Annotated[RunAttempt, Depends(get_attempt)]


class BodyReader:
    """The request body as a file a worker thread can read from, pulled from the event loop chunk by chunk."""

    def __init__(self, request: Request) -> None:
        self.stream: AsyncIterator[bytes] = request.stream().__aiter__()
        self.buffer = b""
        self.done = False

    async def _next(self) -> bytes:
        try:
            return await self.stream.__anext__()
        except StopAsyncIteration:
            return b""

    def read(self, size: int = -1) -> bytes:
        while not self.done and (size < 0 or len(self.buffer) < size):
            chunk = anyio.from_thread.run(self._next)
            if not chunk:
                self.done = True
            self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


@router.post("/start", response_model=JobPlanOut)
def start(body: JobHello, attempt: CurrentAttempt, session: SessionDep, settings: SettingsDep) -> JobPlanOut:
    """The job's first call: checks the node's release and returns the plan, inputs and resume point."""
    plan = channel.hello(session, settings, store_for(settings), attempt, body)
    session.commit()
    return plan


@router.get("/inputs/{sha256}")
def fetch_input(sha256: str, attempt: CurrentAttempt, session: SessionDep, settings: SettingsDep) -> Response:
    """One of the attempt's inputs by digest (a checkpoint to sample, the state to resume from)."""
    if not SHA256.match(sha256) or not channel.allowed_input(session, attempt, sha256):
        raise NotFound("not an input of this attempt")
    store = store_for(settings)
    if not store.exists(sha256):
        raise NotFound("that input is missing from the archive")
    url = store.presign(sha256, expires_s=600)
    if url:
        return RedirectResponse(url, status_code=307)
    return StreamingResponse(store.open_range(sha256), media_type="application/octet-stream",
                             headers={"X-Content-SHA256": sha256, "Content-Length": str(store.size(sha256))})


@router.post("/log", response_model=Control)
def send_log(body: LogChunk, attempt: CurrentAttempt, session: SessionDep, settings: SettingsDep) -> Control:
    """Append to the attempt's log from `offset` on, with the latest progress; says whether to stop."""
    control = channel.append_log(session, settings, attempt, body)
    session.commit()
    return control


@router.put("/checkpoint", response_model=Control)
def send_checkpoint(request: Request, attempt: CurrentAttempt, session: SessionDep, settings: SettingsDep,
                    sha256: Annotated[str, SHA256_HEADER],
                    step: Annotated[int, Query(ge=0, le=1 << 40)]) -> Control:
    """Ship the job's resumable state as of `step`: the run resumes from the latest one if its node vanishes."""
    control = channel.accept_checkpoint(session, settings, store_for(settings), attempt, step=step,
                                        stream=BodyReader(request), sha256=sha256)
    session.commit()
    return control


@router.put("/outputs/{name}", response_model=Received, status_code=201)
def send_output(name: ArtifactName, request: Request, attempt: CurrentAttempt, session: SessionDep,
                settings: SettingsDep, sha256: Annotated[str, SHA256_HEADER]) -> Received:
    """Send one declared output; only names the job's kind may produce are taken, and only with a matching
    digest."""
    if request.headers.get("content-length") is None and request.headers.get("transfer-encoding") is None:
        raise Invalid("send the file as the request body")
    received = channel.accept_output(session, settings, store_for(settings), attempt, name=name,
                                     stream=BodyReader(request), sha256=sha256)
    session.commit()
    return received


@router.post("/end", status_code=204)
def end(body: JobEnd, attempt: CurrentAttempt, session: SessionDep) -> Response:
    """The job's own report of how it ended (exit code, whether it stopped on request, problems)."""
    channel.report_end(session, attempt, body)
    session.commit()
    return Response(status_code=204)
