"""Runs at the data layer, on SQLite and PostgreSQL: checked transitions with events, claims, cancellation, the
ledger, and the cancel-versus-claim race."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from scheduler.loop import Scheduler
from service.attempts.service import new_attempt
from service.db import make_engine, writer
from service.errors import Conflict, Forbidden
from service.ledger import service as ledger
from service.models import AttemptState, EntryKind, LedgerEntry, Proposal, Role, Run, RunAttempt, RunEvent, RunState
from service.runs import service as runs
from service.runs.state import can_move, move_attempt, transition
from service.timeutil import utcnow
from tests.factories import award, create_call, create_proposal, create_user
from tests.pools import ScriptedPool


@pytest.fixture
def queued_run(session: Session):
    admin, pi = create_user(session, Role.admin), create_user(session)
    proposal = create_proposal(session, pi, create_call(session, admin))
    _, run = award(session, admin, proposal)
    return {"admin": admin, "pi": pi, "run": run}


# The run and attempt machines as the design writes them down, spelled out here rather than read from the code, so
# that an entry added to or dropped from the code's tables makes these tests fail.
RUN_MOVES = {("queued", "running"), ("queued", "cancelled"), ("queued", "failed"), ("running", "succeeded"),
             ("running", "failed"), ("running", "cancelled"), ("running", "queued")}
ATTEMPT_MOVES = {("starting", "running"), ("starting", "failed"), ("running", "succeeded"), ("running", "failed"),
                 ("running", "stopped"), ("running", "lost")}


def test_every_written_down_run_transition_is_taken_and_no_other(session: Session, queued_run) -> None:
    run: Run = queued_run["run"]
    for source in RunState:
        for target in RunState:
            session.execute(update(Run).where(Run.id == run.id).values(state=source))
            session.refresh(run)
            assert can_move(source, target) == ((source, target) in RUN_MOVES), (source, target)
            if (source, target) in RUN_MOVES:
                transition(session, run, target, "test")
                assert session.get(Run, run.id, populate_existing=True).state == target
            else:
                with pytest.raises(Conflict, match=f"cannot go from {source} to {target}"):
                    transition(session, run, target, "test")
            session.rollback()


def test_every_written_down_attempt_transition_is_taken_and_no_other(session: Session, queued_run) -> None:
    run: Run = queued_run["run"]
    attempt, _ = new_attempt(session, run, pool="local")
    session.commit()
    for source in AttemptState:
        for target in AttemptState:
            session.execute(update(RunAttempt).where(RunAttempt.id == attempt.id).values(state=source))
            session.refresh(attempt)
            if (source, target) in ATTEMPT_MOVES:
                move_attempt(session, attempt, target, "test")
                assert session.get(RunAttempt, attempt.id, populate_existing=True).state == target
            else:
                with pytest.raises(Conflict, match=f"cannot go from {source} to {target}"):
                    move_attempt(session, attempt, target, "test")
            session.rollback()


def test_transitions_are_conditional_and_leave_events(engine: Engine, session: Session, queued_run) -> None:
    run: Run = queued_run["run"]
    with pytest.raises(Conflict, match="cannot go from queued to succeeded"):
        transition(session, run, RunState.succeeded, "no")
    with Session(engine, expire_on_commit=False) as other:
        stale = other.get(Run, run.id)  # read while queued, and kept as read
        other.expunge(stale)
        other.rollback()
        transition(session, run, RunState.running, "started")
        session.commit()
        assert run.state == RunState.running and run.started_at is not None
        # A writer that read the run while it was queued loses: nothing is overwritten.
        other.add(stale)
        with pytest.raises(Conflict, match="changed while moving it from queued to cancelled"):
            transition(other, stale, RunState.cancelled, "too late")
        other.rollback()
    transition(session, run, RunState.failed, "boom", actor="test")
    session.commit()
    assert run.finished_at is not None and run.message == "boom"
    events = session.exec(select(RunEvent).where(RunEvent.run_id == run.id).order_by(RunEvent.id)).all()
    assert [(e.from_state, e.to_state, e.reason) for e in events] == [("queued", "running", "started"),
                                                                      ("running", "failed", "boom")]


def test_claim_takes_each_run_once_until_expiry(session: Session, queued_run) -> None:
    _, first = runs.claim_queued(session, limit=5, ttl_s=60)
    assert [r.id for r in first] == [queued_run["run"].id]
    _, second = runs.claim_queued(session, limit=5, ttl_s=60)
    assert second == []
    _, after_expiry = runs.claim_queued(session, limit=5, ttl_s=60, now=utcnow() + timedelta(seconds=120))
    assert [r.id for r in after_expiry] == [queued_run["run"].id]


def test_the_award_is_a_ledger_account_and_debits_never_pass_its_balance(session: Session, queued_run) -> None:
    run: Run = queued_run["run"]
    account = ledger.account_id_for_award(session, run.award_id)
    assert ledger.balance(session, account) == 3600
    assert ledger.debit(session, account_id=account, seconds=100, key="debit:a", run_id=run.id, attempt=1) == 100
    assert ledger.debit(session, account_id=account, seconds=100, key="debit:a", run_id=run.id, attempt=1) == 100
    assert ledger.balance(session, account) == 3500  # the same key twice is one entry
    assert ledger.debit(session, account_id=account, seconds=9999, key="debit:b", run_id=run.id, attempt=1) == 3500
    assert ledger.balance(session, account) == 0
    assert ledger.settle(session, account_id=account, run_id=run.id, attempt=1, kept_seconds=600, note="") == 600
    session.commit()
    assert ledger.balance(session, account) == 3000 and ledger.award_used(session, run.award_id) == 600
    kinds = [e.kind for e in session.exec(select(LedgerEntry).where(LedgerEntry.account_id == account)
                                           .order_by(LedgerEntry.id))]
    assert kinds == [EntryKind.credit, EntryKind.debit, EntryKind.debit, EntryKind.refund]


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
    transition(session, run, RunState.running, "started")
    session.commit()
    run = runs.request_cancel(session, actor=queued_run["admin"], run_id=run.id)
    assert run.state == RunState.running and run.cancel_requested


def test_co_investigator_cannot_cancel(session: Session, queued_run) -> None:
    from tests.factories import add_coi

    coi = create_user(session)
    add_coi(session, queued_run["pi"], session.get(Proposal, queued_run["run"].proposal_id), coi)
    session.commit()
    assert runs.get_visible(session, actor=coi, run_id=queued_run["run"].id)
    with pytest.raises(Forbidden):
        runs.request_cancel(session, actor=coi, run_id=queued_run["run"].id)


def test_a_cancel_racing_the_claim_never_leaves_a_finished_run_running(db_url: str, engine: Engine, session: Session,
                                                                      settings) -> None:
    """Cancels land while a scheduler claims and submits the same runs: every run ends either cancelled (and any
    job it got stopped) or running with no cancel pending and no finish time, never a mix."""
    admin, pi = create_user(session, Role.admin), create_user(session)
    call = create_call(session, admin, capacity=1000)
    ids = [award(session, admin, create_proposal(session, pi, call))[1].id for _ in range(16)]
    pool = ScriptedPool()
    scheduler_engine, cancel_engine = make_engine(db_url), make_engine(db_url)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def dispatch() -> None:
        try:
            barrier.wait()
            for _ in range(10):
                Scheduler(scheduler_engine, settings, pool).dispatch()
        except BaseException as exc:
            errors.append(exc)

    def cancel() -> None:
        try:
            barrier.wait()
            for run_id in ids:
                with Session(writer(cancel_engine), expire_on_commit=False) as s:
                    runs.request_cancel(s, actor=pi, run_id=run_id)
                    s.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=dispatch), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    Scheduler(scheduler_engine, settings, pool).dispatch()  # a claimed run with a cancel pending is cancelled
    scheduler_engine.dispose()
    cancel_engine.dispose()
    assert errors == []
    session.expire_all()
    for run_id in ids:
        run = session.get(Run, run_id)
        if run.state == RunState.running:
            assert run.finished_at is None
        else:
            assert run.state == RunState.cancelled and run.finished_at is not None, (run.state, run.message)
            submitted = [r.submission_id for r in pool.requests if r.metadata["run_id"] == str(run_id)]
            assert set(submitted) <= set(pool.stopped), "a cancelled run's job was left on the pool"
    running = [session.get(Run, i) for i in ids if session.get(Run, i).state == RunState.running]
    assert all(r.cancel_requested for r in running)  # the cancel landed as a request the scheduler acts on


def test_the_run_page_plots_the_loss_as_the_run_reports_it(lite_client, lite_session: Session) -> None:
    from tests.factories import TINY_TRAIN, auth_headers

    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin),
                                                        job_plan={**TINY_TRAIN, "steps": 1020}))
    run = lite_session.get(Run, run.id)
    for step in range(1, 1001):  # a thousand progress lines: the curve keeps at most 200 points, evenly spaced
        runs.record_progress(run, {"step": step, "total": 1000, "loss": 1.0 / step, "fraction": step / 1000})
    curve = run.progress_detail["curve"]
    assert 100 < len(curve) <= runs.CURVE_POINTS and curve[-1] == [1000, 0.001]
    gaps = {b[0] - a[0] for a, b in zip(curve, curve[1:], strict=False)}
    assert gaps == {run.progress_detail["curve_every"]}
    # A GPU job's line carries the latest loss read back, which may be some steps behind: it is plotted at its own.
    runs.record_progress(run, {"step": 1010, "total": 1020, "loss": 0.0009, "loss_step": 1008, "fraction": 0.99})
    assert run.progress_detail["curve_every"] == 8 and run.progress_detail["curve"][-1] == [1008, 0.0009]
    runs.record_progress(run, {"step": 1020, "total": 1020, "loss": 0.5, "loss_step": 1000, "fraction": 1.0})
    assert run.progress_detail["curve"][-1] == [1008, 0.0009]  # an older step's loss never goes back in time
    curve = run.progress_detail["curve"]
    run.state = RunState.running
    lite_session.add(run)
    lite_session.commit()
    page = lite_client.get(f"/runs/{run.id}", headers=auth_headers(lite_session, pi)).text
    assert 'id="live-loss-chart"' in page and f"Training loss so far, log scale: {curve[0][1]:.4f} → 0.0009" in page
    points = page.split('id="live-loss-line"')[1].split('points="')[1].split('"')[0].split()
    assert len(points) == len(curve) and points[0].startswith("6.0,6.0")  # the highest loss, top left
    api = lite_client.get(f"/api/runs/{run.id}", headers=auth_headers(lite_session, pi)).json()
    assert api["progress_detail"]["curve"] == curve
