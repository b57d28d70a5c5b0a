"""The job channel: the only door a job on a pool node has into the observatory.

Every call carries the attempt's own bearer token (`att_…`), which dies when the attempt ends. It reaches this
attempt's inputs and outputs and nothing else: no user route accepts it, and these routes accept no user's token.
A job on the head gets it from the scheduler in its environment. A job on an owner's machine gets it by asking
(`/job/claim`) with the machine's own credential, and each of its calls carries that credential too, so that a
token read elsewhere (Ray shows every member each job's environment) is of no use away from its machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio.from_thread
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from jobs.credentials import MACHINE_HEADER
from service.archive.service import store_for
from service.archive.store import SHA256
from service.attempts import channel
from service.attempts.schemas import Control, JobEnd, JobHello, JobPlanOut, LogChunk, Received
from service.attempts.service import attempt_for_token, claim_for_machine
from service.deps import SessionDep, SettingsDep
from service.errors import Forbidden, Invalid, NotFound, Unauthenticated
from service.models import MachineState, RunAttempt
from service.pool.machines import machine_for_token
from service.types import ArtifactName

router = APIRouter(prefix="/job", tags=["job channel"])
SHA256_HEADER = Header(alias="X-Content-SHA256", pattern=r"^[0-9a-f]{64}$",
                       description="sha256 of the body, hex; the body is refused unless it matches.")




def get_attempt(request: Request, session: SessionDep) -> RunAttempt:
    """The live attempt whose token the call carries; an attempt placed on an owner's machine answers only to a
    call that also carries that machine's own credential (X-Machine-Token)."""
    header = request.headers.get("authorization", "")
    attempt = attempt_for_token(session, header[7:].strip()) if header.lower().startswith("bearer ") else None
    if attempt is None:
        raise Unauthenticated("this call needs a live run attempt's token")
    if attempt.machine_id is not None:
        raw = request.headers.get(MACHINE_HEADER, "")
        machine = _machine_or_none(session, raw)
        if machine is None or machine.id != attempt.machine_id:
            raise Unauthenticated("this attempt's token works only from the machine it was placed on (send that "
                                  f"machine's credential in {MACHINE_HEADER})")
    # Hand the connection (and, for a call that writes, SQLite's write lock) back before the route runs in another
    # thread: under load every thread may be waiting for that lock, and none would be left to run the route.
    session.close()
    return attempt


def _machine_or_none(session: SessionDep, raw: str):  # type: ignore[no-untyped-def]
    try:
        return machine_for_token(session, raw[:200]) if raw else None
    except Unauthenticated:
        return None


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


class Claim(BaseModel):
    submission_id: str = Field(max_length=100)


class Claimed(BaseModel):
    token: str


@router.post("/claim", response_model=Claimed)
def claim(body: Claim, request: Request, session: SessionDep) -> Claimed:
    """A runner on an owner's machine asks, with the machine's own credential as bearer token, for the token of the
    attempt Ray started there; it is made afresh, and works only with that credential beside it."""
    header = request.headers.get("authorization", "")
    machine = _machine_or_none(session, header[7:].strip()) if header.lower().startswith("bearer ") else None
    if machine is None:
        raise Unauthenticated("this call needs the machine's own credential")
    if machine.state != MachineState.approved:
        raise Forbidden(f"machine {machine.id} is {machine.state}: it starts no work")
    _, token = claim_for_machine(session, machine.id, body.submission_id)
    session.commit()
    return Claimed(token=token)


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
    url = store.presign(sha256, expires_s=600) if settings.s3_signed_links else None
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
