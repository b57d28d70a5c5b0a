"""Builders for the tests: accounts, calls, proposals, awards, and API sign-in."""

from __future__ import annotations

import io
import json
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
from service.calls.schemas import CallCreate, CycleCreate
from service.calls.service import create_call as _create_call
from service.calls.service import create_cycle as _create_cycle
from service.config import Settings
from service.db import writer
from service.models import Award, Call, CallKind, Cycle, Machine, Proposal, ProposalState, Role, Run, RunState, User
from service.proposals import states, team
from service.proposals.schemas import ProposalCreate
from service.proposals.service import create_proposal as _create_proposal
from service.review import assignments
from service.timeutil import utcnow

PASSWORD = "correct horse battery"
TINY_TRAIN = {"kind": "train", "steps": 2, "batch_size": 8, "block_out_channels": [8, 16], "resolution": 8,
              "sample_count": 4, "sample_inference_steps": 2, "num_train_timesteps": 20, "checkpoint_every": 1}

_counter = {"n": 0}


def _write(session: Session) -> None:
    """Begin the factory's next transaction as the portal's writers do (BEGIN IMMEDIATE on SQLite): a live server
    may be writing to the same file, and a transaction that read first could not then write."""
    if session.in_transaction():
        session.commit()
    session.connection(execution_options=writer(session.get_bind()).get_execution_options())


def create_user(session: Session, role: Role = Role.researcher, email: str | None = None, *,
                institution: str = "", name: str | None = None) -> User:
    _write(session)
    _counter["n"] += 1
    email = email or f"{role}{_counter['n']}@example.org"
    user = _create_user(session, email=email, name=name or f"{role.title()} {_counter['n']}", roles=[role],
                        password=PASSWORD, institution=institution)
    session.commit()
    return user


def create_call(session: Session, admin: User, *, open_now: bool = True, capacity: float = 10.0,
                exclusive_months: int = 12, title: str = "Cycle test", **settings: Any) -> Call:
    _write(session)
    now = utcnow()
    opens = now - timedelta(days=1) if open_now else now - timedelta(days=30)
    closes = now + timedelta(days=30) if open_now else now - timedelta(days=1)
    call = _create_call(session, actor=admin, data=CallCreate(
        title=title, opens_at=opens, closes_at=closes, capacity_gpu_hours=capacity,
        exclusive_months=exclusive_months, **settings))
    session.commit()
    return call


def create_cycle(session: Session, admin: User, *, capacity: float = 100.0, reserve: float = 10.0) -> Cycle:
    _write(session)
    cycle = _create_cycle(session, actor=admin, data=CycleCreate(name="Cycle test", capacity_gpu_hours=capacity,
                                                                 director_reserve_gpu_hours=reserve))
    session.commit()
    return cycle


def close_call(session: Session, call: Call) -> Call:
    """The call's deadline passes now."""
    _write(session)
    call = session.get(Call, call.id)
    call.closes_at = utcnow() - timedelta(seconds=1)
    session.add(call)
    session.commit()
    return call


def start_review(session: Session, admin: User, call: Call):
    """Close the call now and start its review, as the chair would."""
    _write(session)
    close_call(session, call)
    started = assignments.start_review(session, actor=admin, call_id=call.id)
    session.commit()
    return started


def proposal_body(**overrides: Any) -> dict[str, Any]:
    body = {"title": "Memorisation at small scale", "abstract": "Does it copy?", "justification": "Because.",
            "requested_gpu_hours": 1.0, "job_plan": dict(TINY_TRAIN), "submit": True}
    body.update(overrides)
    return body


def create_proposal(session: Session, pi: User, call: Call, **overrides: Any) -> Proposal:
    _write(session)
    proposal = _create_proposal(session, actor=pi, call_id=call.id, data=ProposalCreate(**proposal_body(**overrides)))
    session.commit()
    return proposal


def award(session: Session, admin: User, proposal: Proposal, gpu_hours: float = 1.0, **kwargs: Any):
    """Award a submitted proposal as the committee would, putting it under review first (without reviewers) when
    its call is a regular one."""
    under_review(session, admin, proposal)
    _write(session)
    kwargs.setdefault("reason", "awarded by a test")  # so that no ranking stands in the way
    award_, run = award_proposal(session, actor=admin, proposal_id=proposal.id, gpu_hours=gpu_hours, **kwargs)
    session.commit()
    return award_, run


def under_review(session: Session, admin: User, proposal: Proposal) -> Proposal:
    """A submitted proposal of a regular call goes under review by itself (no reviewers), ready to be decided."""
    _write(session)
    proposal = session.get(Proposal, proposal.id)
    if proposal.state == ProposalState.submitted and session.get(Call, proposal.call_id).kind == CallKind.regular:
        states.move(session, proposal, ProposalState.under_review, actor=admin, reason="test: straight to review")
    session.commit()
    return proposal


def add_coi(session: Session, pi: User, proposal: Proposal, coi: User) -> None:
    """`coi` joins the proposal's team through an invite link the PI makes, as a co-investigator would."""
    _, link = team.invite(session, actor=pi, proposal_id=proposal.id, email=coi.email, base_url="http://x")
    team.accept(session, actor=coi, raw=link.rsplit("/", 1)[1])
    session.commit()


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


def portal_signed_in(client: TestClient, user: User) -> TestClient:
    """The client signed in to the portal as `user` (its cookie), through the sign-in form."""
    client.cookies.clear()
    response = post_form(client, "/login", {"email": user.email, "password": PASSWORD, "next": "/"},
                         follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


def signed_up(client: TestClient, email: str, name: str = "New Researcher", password: str = PASSWORD,
              **extra: str) -> dict[str, str]:
    """Sign up through the API as a person would, open the confirmation link from the outbox, and return the API
    headers that the confirmation gives."""
    import re

    from sqlmodel import select

    from service.db import session_scope
    from service.models import OutboxMessage

    made = client.post("/api/auth/signup", json={"email": email, "name": name, "password": password, **extra})
    assert made.status_code == 202, made.text
    with session_scope(client.app.state.engine) as session:
        body = session.exec(select(OutboxMessage.body).where(OutboxMessage.to_address == email.lower())
                            .order_by(OutboxMessage.id.desc())).first()
    token = re.search(r"/verify/(ver_[\w-]+)", body).group(1)
    confirmed = client.post("/api/auth/verify", json={"token": token, "password": password})
    assert confirmed.status_code == 200, confirmed.text
    return {"Authorization": f"Bearer {confirmed.json()['token']}"}


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


def registered_model(client: TestClient, session: Session, settings: Settings, admin: User, checkpoint: bytes,
                     plan: dict[str, Any], name: str = "tiny") -> tuple[str, Run]:
    """A checkpoint archived as a succeeded train run's outputs (trained on the plan's pinned dataset), registered
    from the API as a version of model `name`: its name@N, and the run."""
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin),
                                                   job_plan=plan))
    run = session.get(Run, run.id)
    attribution = {"dataset": run.job_plan["dataset"], "digest": run.job_plan["dataset_digest"], "images": []}
    archive_outputs(session, settings, run, {"checkpoint.pt": checkpoint, "samples.png": b"\x89PNG",
                                             "training_images.png": b"\x89PNG", "metrics.json": b"{}",
                                             "attribution.json": json.dumps(attribution).encode()})
    run.state = RunState.succeeded
    session.add(run)
    session.commit()
    made = client.post("/api/models", headers=auth_headers(session, admin), json={"run_id": run.id, "name": name})
    assert made.status_code == 201, made.text
    return made.json()["ref"], run


def succeeded_run(session: Session, settings: Settings, admin: User, files: dict[str, bytes], *, title: str = "A run",
                  pi: User | None = None, public: bool = False, kind: str | None = None,
                  plan: dict[str, Any] | None = None) -> Run:
    """An awarded proposal's run, succeeded with `files` as its outputs; `public`: its exclusive period is over;
    `kind`/`plan`: another job kind and plan than the award's train run."""
    proposal = create_proposal(session, pi or create_user(session), create_call(session, admin), title=title)
    granted, run = award(session, admin, proposal)
    run = session.get(Run, run.id)
    run.state, run.finished_at = RunState.succeeded, utcnow()
    if kind is not None:
        run.job_kind, run.job_plan = kind, plan or {}
    session.add(run)
    archive_outputs(session, settings, run, files)
    if public:
        granted = session.get(Award, granted.id)
        granted.exclusive_until = utcnow() - timedelta(days=1)
        session.add(granted)
    session.commit()
    return run
