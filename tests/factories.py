"""Builders for the tests: accounts, calls, proposals, awards, and API sign-in."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from jobs.kinds import job_kind
from service.allocations.service import award_proposal
from service.archive.service import missing_outputs, record, store_for, write_manifest
from service.auth.service import create_user as _create_user
from service.auth.service import issue_token
from service.calls.schemas import CallCreate
from service.calls.service import create_call as _create_call
from service.config import Settings
from service.models import Call, Machine, Proposal, Role, Run, User
from service.proposals.schemas import ProposalCreate
from service.proposals.service import create_proposal as _create_proposal
from service.timeutil import utcnow

PASSWORD = "correct horse battery"
TINY_TRAIN = {"kind": "train", "steps": 2, "batch_size": 8, "block_out_channels": [8, 16], "resolution": 8,
              "sample_count": 4, "sample_inference_steps": 2, "num_train_timesteps": 20, "checkpoint_every": 1}

_counter = {"n": 0}


def create_user(session: Session, role: Role = Role.researcher, email: str | None = None) -> User:
    _counter["n"] += 1
    email = email or f"{role}{_counter['n']}@example.org"
    user = _create_user(session, email=email, name=f"{role.title()} {_counter['n']}", roles=[role], password=PASSWORD)
    session.commit()
    return user


def create_call(session: Session, admin: User, *, open_now: bool = True, capacity: float = 10.0,
                exclusive_months: int = 12) -> Call:
    now = utcnow()
    opens = now - timedelta(days=1) if open_now else now - timedelta(days=30)
    closes = now + timedelta(days=30) if open_now else now - timedelta(days=1)
    call = _create_call(session, actor=admin, data=CallCreate(
        title="Cycle test", opens_at=opens, closes_at=closes, capacity_gpu_hours=capacity,
        exclusive_months=exclusive_months))
    session.commit()
    return call


def proposal_body(**overrides: Any) -> dict[str, Any]:
    body = {"title": "Memorisation at small scale", "abstract": "Does it copy?", "justification": "Because.",
            "requested_gpu_hours": 1.0, "job_plan": dict(TINY_TRAIN), "submit": True}
    body.update(overrides)
    return body


def create_proposal(session: Session, pi: User, call: Call, **overrides: Any) -> Proposal:
    proposal = _create_proposal(session, actor=pi, call_id=call.id, data=ProposalCreate(**proposal_body(**overrides)))
    session.commit()
    return proposal


def award(session: Session, admin: User, proposal: Proposal, gpu_hours: float = 1.0):
    award_, run = award_proposal(session, actor=admin, proposal_id=proposal.id, gpu_hours=gpu_hours)
    session.commit()
    return award_, run


def auth_headers(session: Session, user: User) -> dict[str, str]:
    token = issue_token(session, user=user)
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def csrf_token(client: TestClient) -> str:
    """The CSRF token of the client's portal session, as a page's form carries it."""
    page = client.get("/login").text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def post_form(client: TestClient, url: str, data: dict[str, Any] | None = None, **kwargs: Any):
    """Submit a portal form as the portal's own page would: with the session's CSRF token."""
    return client.post(url, data={**(data or {}), "csrf_token": csrf_token(client)}, **kwargs)


def login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def archive_outputs(session: Session, settings: Settings, run: Run, files: dict[str, bytes]) -> list[str]:
    """Put files in the archive as a job's declared outputs would arrive; returns the required ones missing."""
    store = store_for(settings)
    kind = job_kind(run.job_kind)
    for name, data in files.items():
        sha, size = store.put(io.BytesIO(data))
        record(session, run, kind.spec(name), sha, size)
    write_manifest(session, store=store, run=run)
    session.commit()
    return missing_outputs(session, run, kind)


def create_machine(session: Session, owner: User, admin: User | None = None, *, name: str = "attic box",
                   show_owner: bool = False, **measured: Any) -> tuple[Machine, str]:
    """An owner's machine, approved by `admin` when given, measured as `measured` says; returns it and its token
    (None while it is not approved)."""
    from service.auth.service import take_role
    from service.pool import machines
    from service.pool.schemas import Measurement

    owner = take_role(session, owner, Role.owner)
    machine = machines.register(session, owner, name=name, show_owner=show_owner)
    token = None
    if admin is not None:
        machines.decide(session, admin, machine.id, approve=True)
        _, token = machines.issue_token(session, owner, machine.id)
        machines.record_join(session, machine, Measurement(**{"release": "0.2.0", "cpus": 2, **measured}))
    session.commit()
    return machine, token
