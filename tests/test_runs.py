"""Runs at the data layer, on SQLite and PostgreSQL: the state machine, claims, charging, cancellation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from service.allocations.usage import remaining_gpu_seconds
from service.errors import Conflict, Forbidden
from service.models import Role, Run, RunState
from service.runs import service as runs
from service.runs.state import TRANSITIONS, can_move, move
from service.timeutil import utcnow
from tests.factories import award, create_call, create_proposal, create_user


@pytest.fixture
def queued_run(session: Session):
    admin, pi = create_user(session, Role.admin), create_user(session)
    proposal = create_proposal(session, pi, create_call(session, admin))
    _, run = award(session, admin, proposal)
    return {"admin": admin, "pi": pi, "run": run}


def test_every_listed_transition_is_allowed_and_no_other() -> None:
    for source in RunState:
        for target in RunState:
            assert can_move(source, target) == (target in TRANSITIONS[source])
    assert not can_move(RunState.succeeded, RunState.running)
    assert can_move(RunState.running, RunState.queued)  # node lost: resume elsewhere


def test_move_refuses_illegal_transition(queued_run) -> None:
    run: Run = queued_run["run"]
    with pytest.raises(Conflict, match="cannot go from queued to succeeded"):
        move(run, RunState.succeeded)
    move(run, RunState.running)
    assert run.started_at is not None and run.charged_until is not None
    move(run, RunState.failed, "boom")
    assert run.finished_at is not None and run.message == "boom"


def test_claim_takes_each_run_once_until_expiry(session: Session, queued_run) -> None:
    _, first = runs.claim_queued(session, limit=5, ttl_s=60)
    assert [r.id for r in first] == [queued_run["run"].id]
    _, second = runs.claim_queued(session, limit=5, ttl_s=60)
    assert second == []
    _, after_expiry = runs.claim_queued(session, limit=5, ttl_s=60, now=utcnow() + timedelta(seconds=120))
    assert [r.id for r in after_expiry] == [queued_run["run"].id]


def test_charge_advances_a_watermark(session: Session, queued_run) -> None:
    run: Run = queued_run["run"]
    move(run, RunState.running)
    start = run.charged_until
    assert runs.charge(run, start + timedelta(seconds=10)) == pytest.approx(10)
    assert runs.charge(run, start + timedelta(seconds=10)) == 0  # the same instant is never charged twice
    assert runs.charge(run, start + timedelta(seconds=15)) == pytest.approx(5)
    assert run.gpu_seconds == pytest.approx(15)
    session.add(run)
    session.commit()
    assert remaining_gpu_seconds(session, run.award_id) == pytest.approx(3600 - 15)


def test_cancel_rules(session: Session, queued_run) -> None:
    other = create_user(session)
    with pytest.raises(Exception, match="no run"):
        runs.request_cancel(session, actor=other, run_id=queued_run["run"].id)
    reviewer = create_user(session, Role.reviewer)
    with pytest.raises(Exception, match="no run"):
        runs.request_cancel(session, actor=reviewer, run_id=queued_run["run"].id)
    run = runs.request_cancel(session, actor=queued_run["pi"], run_id=queued_run["run"].id)
    session.commit()
    assert run.state == RunState.cancelled and run.finished_at is not None


def test_cancel_of_running_run_is_a_request(session: Session, queued_run) -> None:
    run: Run = queued_run["run"]
    move(run, RunState.running)
    session.add(run)
    session.commit()
    run = runs.request_cancel(session, actor=queued_run["admin"], run_id=run.id)
    assert run.state == RunState.running and run.cancel_requested


def test_co_investigator_cannot_cancel(session: Session, queued_run) -> None:
    from service.proposals.service import add_member

    coi = create_user(session)
    add_member(session, actor=queued_run["pi"], proposal_id=queued_run["run"].proposal_id, email=coi.email)
    session.commit()
    assert runs.get_visible(session, actor=coi, run_id=queued_run["run"].id)
    with pytest.raises(Forbidden):
        runs.request_cancel(session, actor=coi, run_id=queued_run["run"].id)
