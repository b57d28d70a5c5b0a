"""The scheduler against a scripted pool and jobs that talk over the real job channel: node loss, kills, failures,
budgets, cancels, restarts and archive faults, each with its accounting in the ledger."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from scheduler.loop import Scheduler
from scheduler.ray_backend import JobRequest, JobState
from service.archive.service import list_artifacts, read_object, store_for
from service.errors import Conflict
from service.ledger.service import entries_for_run, run_charged
from service.models import AttemptState, Role, Run, RunAttempt, RunState
from service.runs.service import request_cancel
from service.timeutil import utcnow
from tests.factories import award, create_call, create_proposal, create_user
from tests.pools import TRAIN_FILES, FakeJob, ScriptedPool, current_run, dispatched_run


@pytest.fixture
def world(lite_engine: Engine, lite_session: Session, lite_settings, lite_client):
    scheduler, pool, run_id, pi = dispatched_run(lite_engine, lite_session, lite_settings)
    return scheduler, pool, run_id, lite_client, pi


def _attempt(engine: Engine, run_id: int, number: int) -> RunAttempt:
    with Session(engine) as session:
        return session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id,
                                                     RunAttempt.number == number)).one()


def _backdate(engine: Engine, run_id: int, number: int, seconds: float, checkpoint_after: float | None = None):
    """As if the attempt had started `seconds` ago (and shipped a checkpoint `checkpoint_after` seconds in)."""
    with Session(engine) as session:
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id,
                                                        RunAttempt.number == number)).one()
        attempt.started_at = attempt.started_at - timedelta(seconds=seconds)
        if checkpoint_after is not None:
            attempt.checkpoint_at = attempt.started_at + timedelta(seconds=checkpoint_after)
        session.add(attempt)
        session.commit()
        return attempt.started_at


def _stop_clock(monkeypatch, now: datetime) -> None:  # type: ignore[no-untyped-def]
    """The scheduler's clock stands still at `now`: however slow the machine running the test, a backdated job has
    run exactly as long as the test says when it is charged."""
    from scheduler import accounting
    from scheduler import reconcile as reconciling

    for module in (accounting, reconciling):
        monkeypatch.setattr(module, "utcnow", lambda: now)


def _charged(engine: Engine, run_id: int, attempt: int | None = None) -> int:
    with Session(engine) as session:
        return run_charged(session, run_id, attempt)


def test_waiting_for_a_gpu_is_not_charged(world, lite_engine) -> None:
    scheduler, pool, run_id, _, _ = world
    scheduler.reconcile()
    assert current_run(lite_engine, run_id).state == RunState.running and _charged(lite_engine, run_id) == 0


@pytest.mark.parametrize("ran_s", [7.0, 12.7])
def test_a_finished_job_is_charged_exactly_up_to_its_end(world, lite_engine, ran_s: float, monkeypatch) -> None:
    scheduler, pool, run_id, client, _ = world
    job = FakeJob(client, pool.token())
    job.start()
    started = _backdate(lite_engine, run_id, 1, 40.5)
    _stop_clock(monkeypatch, started + timedelta(seconds=40.5))
    pool.set(pool.submitted[0], JobState.running)
    scheduler.reconcile()
    assert 39 <= _charged(lite_engine, run_id) <= 41  # charged as it runs, in spans of 30 s or more
    job.outputs(TRAIN_FILES)
    job.end(0)
    pool.set(pool.submitted[0], JobState.succeeded, ended_at=started + timedelta(seconds=ran_s))
    scheduler.reconcile()
    assert current_run(lite_engine, run_id).state == RunState.succeeded
    # Settled to the job's real end, in whole seconds: what was charged beyond it refunded, what is missing debited.
    assert _charged(lite_engine, run_id) == int(ran_s)


def test_a_lost_node_resumes_from_its_checkpoint_and_the_lost_work_is_refunded(world, lite_engine) -> None:
    scheduler, pool, run_id, client, _ = world
    job = FakeJob(client, pool.token())
    job.start()
    assert job.checkpoint(b"state at step 100", step=100).json()["stop"] is None
    _backdate(lite_engine, run_id, 1, 40, checkpoint_after=12)
    pool.set(pool.submitted[0], JobState.running)
    scheduler.reconcile()
    assert _charged(lite_engine, run_id) >= 39
    pool.set(pool.submitted[0], JobState.failed, error_type="JOB_SUPERVISOR_ACTOR_DIED",
             message="Job supervisor actor died: the node was lost")
    scheduler.reconcile()
    run = current_run(lite_engine, run_id)
    assert run.state == RunState.queued and "resume from the checkpoint at step 100" in run.message
    assert _attempt(lite_engine, run_id, 1).state == AttemptState.lost
    assert _charged(lite_engine, run_id, 1) == 12  # kept work only: up to the shipped checkpoint
    with Session(lite_engine) as session:  # the lost attempt's log is kept, with how it ended
        log = next(a for a in list_artifacts(session, run_id) if a.name == "attempt-1.log")
        assert b"lost" in read_object(store_for(scheduler.settings), log.sha256)
    assert scheduler.dispatch() == 1
    plan = FakeJob(client, pool.token()).start().json()
    state_sha = hashlib.sha256(b"state at step 100").hexdigest()
    assert plan["attempt"] == 2 and plan["resume_sha256"] == state_sha and plan["resume_step"] == 100
    assert {"field": "resume_state", "sha256": state_sha, "size": 17} in plan["inputs"]


def test_a_job_ray_forgot_is_lost_and_resubmitted_under_a_new_attempt(world, lite_engine) -> None:
    scheduler, pool, run_id, _, _ = world
    pool.snapshots.clear()  # the cluster was replaced
    scheduler.reconcile()
    assert current_run(lite_engine, run_id).state == RunState.queued
    assert scheduler.dispatch() == 1
    key = current_run(lite_engine, run_id).key
    assert pool.submitted == [f"observatory-run-{run_id}-{key}-1", f"observatory-run-{run_id}-{key}-2"]


def test_a_killed_job_is_retried_within_its_budget_then_fails_in_words(world, lite_engine, lite_settings) -> None:
    scheduler, pool, run_id, client, _ = world
    for retry in range(1, lite_settings.max_retries + 2):
        FakeJob(client, pool.token()).start()
        pool.set(pool.submitted[-1], JobState.failed, exit_code=137, message='{"step": 5} progress json')
        scheduler.reconcile()
        run = current_run(lite_engine, run_id)
        if retry <= lite_settings.max_retries:
            assert run.state == RunState.queued, run.message
            assert f"retry {retry} of {lite_settings.max_retries}" in run.message and "killed" in run.message
            assert scheduler.dispatch() == 1
    assert run.state == RunState.failed
    assert run.message.startswith("the job was killed (signal 9") and "retried 3 times" in run.message
    assert "progress json" not in run.message


def test_a_job_asked_to_stop_that_then_fails_is_cancelled_and_says_how_it_ended(world, lite_engine,
                                                                               lite_session) -> None:
    """A cancel is what the team asked for: a job that errs on its way down (say its last call is refused) ends
    the run cancelled, not failed, and the message keeps the job's last words."""
    scheduler, pool, run_id, client, pi = world
    job = FakeJob(client, pool.token())
    job.start()
    pool.set(pool.submitted[0], JobState.running)
    scheduler.reconcile()
    request_cancel(lite_session, actor=pi, run_id=run_id)
    lite_session.commit()
    job.log("OSError: no space left on device\n")
    job.end(1)
    pool.set(pool.submitted[0], JobState.failed, exit_code=1)
    scheduler.reconcile()
    run = current_run(lite_engine, run_id)
    assert run.state == RunState.cancelled and run.message.startswith("cancelled on request")
    assert "ended with an error on the way" in run.message and "no space left on device" in run.message


def test_a_job_that_failed_on_its_own_fails_with_its_last_words(world, lite_engine) -> None:
    scheduler, pool, run_id, client, _ = world
    job = FakeJob(client, pool.token())
    job.start()
    job.log('@@progress {"fraction": 0.5, "step": 1, "total": 2}\n', {"fraction": 0.5, "step": 1, "total": 2})
    job.log("Traceback...\nValueError: bad data\n")
    job.end(1)
    pool.set(pool.submitted[0], JobState.failed, exit_code=1)
    assert scheduler.reconcile() == 1
    run = current_run(lite_engine, run_id)
    assert run.state == RunState.failed and "ValueError: bad data" in run.message and run.progress == 0.5
    with Session(lite_engine) as session:
        assert {a.name for a in list_artifacts(session, run_id)} == {"attempt-1.log", "job.log", "manifest.json"}


def test_a_failed_submission_is_retried_under_the_same_id(lite_engine, lite_session, lite_settings,
                                                         lite_client) -> None:
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))

    class FlakyPool(ScriptedPool):
        def submit(self, request: JobRequest) -> str:
            super().submit(request)
            if len(self.requests) == 1:
                raise ConnectionError("the head did not answer")  # ...but it took the job
            return request.submission_id

    pool = FlakyPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 0 and current_run(lite_engine, run.id).state == RunState.queued
    # The job started on its node while the scheduler did not know it had (as after a kill mid-dispatch)...
    job = FakeJob(lite_client, pool.token())
    job.start()
    started = _backdate(lite_engine, run.id, 1, 7.3)
    assert scheduler.dispatch() == 1  # ...and the attempt the first try wrote is found on the pool and adopted
    assert pool.submitted == pool.submitted[:1] and current_run(lite_engine, run.id).attempt == 1
    assert _attempt(lite_engine, run.id, 1).state == AttemptState.running
    assert job.end(1).status_code == 204
    pool.set(pool.submitted[0], JobState.failed, exit_code=1, ended_at=started + timedelta(seconds=7.3))
    scheduler.reconcile()
    assert _charged(lite_engine, run.id) == 7  # charged from when the job started, not from the adoption


def test_an_attempt_that_never_reached_the_pool_is_retired(lite_engine, lite_session, lite_settings) -> None:
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))

    class DownPool(ScriptedPool):
        def submit(self, request: JobRequest) -> str:
            if not self.requests and not getattr(self, "tried", False):
                self.tried = True
                raise ConnectionError("the head is down")
            return super().submit(request)

    pool = DownPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 0
    assert scheduler.dispatch() == 1
    assert _attempt(lite_engine, run.id, 1).state == AttemptState.failed
    assert _attempt(lite_engine, run.id, 2).state == AttemptState.running


def test_an_exhausted_award_checkpoints_and_stops_and_is_never_overcharged(lite_engine, lite_session, lite_settings,
                                                                           lite_client) -> None:
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)), gpu_hours=0.01)
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    scheduler.dispatch()
    job = FakeJob(lite_client, pool.token())
    job.start()
    _backdate(lite_engine, run.id, 1, 50)
    pool.set(pool.submitted[0], JobState.running)
    scheduler.reconcile()
    assert _charged(lite_engine, run.id) == 36  # 0.01 GPU-hours, and not a second more
    assert "used up" in current_run(lite_engine, run.id).message
    assert job.log("step 7\n")["stop"] == "budget"
    job.checkpoint(b"state at step 7", step=7)
    job.end(0, stopped=True)
    pool.set(pool.submitted[0], JobState.succeeded)
    scheduler.reconcile()
    stopped = current_run(lite_engine, run.id)
    assert stopped.state == RunState.cancelled and "used up" in stopped.message
    assert "checkpoint at step 7 is kept as state.pt" in stopped.message
    assert _charged(lite_engine, run.id) == 36
    with Session(lite_engine) as session:
        kept = {a.name: a.sha256 for a in list_artifacts(session, run.id)}
    assert kept["state.pt"] == hashlib.sha256(b"state at step 7").hexdigest()


def test_a_cancel_is_honoured_even_when_the_node_is_lost_meanwhile(world, lite_engine, lite_session) -> None:
    scheduler, pool, run_id, client, pi = world
    FakeJob(client, pool.token()).start()
    pool.set(pool.submitted[0], JobState.running)
    scheduler.reconcile()
    request_cancel(lite_session, actor=pi, run_id=run_id)
    lite_session.commit()
    pool.snapshots.clear()  # the node vanished before the job could stop
    scheduler.reconcile()
    assert current_run(lite_engine, run_id).state == RunState.cancelled
    assert scheduler.dispatch() == 0 and len(pool.submitted) == 1


def test_a_dropped_connection_at_the_finishing_commit_loses_nothing(world, lite_engine, monkeypatch) -> None:
    scheduler, pool, run_id, client, _ = world
    job = FakeJob(client, pool.token())
    job.start()
    job.outputs(TRAIN_FILES)
    job.end(0)
    pool.set(pool.submitted[0], JobState.succeeded)
    real_commit, calls = Session.commit, {"n": 0}

    def dropped(self):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return real_commit(self)

    monkeypatch.setattr(Session, "commit", dropped)
    scheduler.reconcile()
    monkeypatch.setattr(Session, "commit", real_commit)
    assert current_run(lite_engine, run_id).state == RunState.running  # nothing was recorded, and nothing was lost
    scheduler.reconcile()
    assert current_run(lite_engine, run_id).state == RunState.succeeded
    with Session(lite_engine) as session:
        assert set(TRAIN_FILES) <= {a.name for a in list_artifacts(session, run_id)}


def _finished(client, pool: ScriptedPool) -> None:  # type: ignore[no-untyped-def]
    """The job sent every output and its end, and Ray says it succeeded: only recording the end is left."""
    job = FakeJob(client, pool.token())
    job.start()
    job.outputs(TRAIN_FILES)
    job.end(0)
    pool.set(pool.submitted[0], JobState.succeeded)


def _backdate_failure(engine: Engine, run_id: int, seconds: float) -> None:
    with Session(engine) as session:
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id)).one()
        if attempt.finish_failed_at is not None:
            attempt.finish_failed_at -= timedelta(seconds=seconds)
            session.add(attempt)
            session.commit()


def test_an_archive_that_refuses_writes_fails_the_run_after_bounded_retries(world, lite_engine, lite_settings,
                                                                            monkeypatch) -> None:
    """A store that refuses (a misconfiguration, not an outage) fails the run after `max_finish_failures` ticks,
    counted on the attempt once per tick interval however many schedulers meet the error."""
    scheduler, pool, run_id, client, _ = world
    twin = Scheduler(lite_engine, lite_settings, pool)
    _finished(client, pool)

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", "archive/objects")

    monkeypatch.setattr(scheduler.store, "put", refuse)
    monkeypatch.setattr(twin.store, "put", refuse)
    for tick in range(1, lite_settings.max_finish_failures + 1):
        scheduler.reconcile()
        twin.reconcile()
        scheduler.reconcile()
        run = current_run(lite_engine, run_id)
        assert _attempt(lite_engine, run_id, 1).finish_failures == tick
        assert run.state == (RunState.failed if tick == lite_settings.max_finish_failures else RunState.running)
        _backdate_failure(lite_engine, run_id, lite_settings.scheduler_interval_s)
    assert "could not record this run's end" in run.message and "Permission denied" in run.message
    assert f"tried {lite_settings.max_finish_failures} times" in run.message


def test_an_archive_outage_never_fails_a_run_and_its_end_is_recorded_once_it_is_back(world, lite_engine,
                                                                                      lite_settings,
                                                                                      monkeypatch) -> None:
    """However long the archive is away, the run waits (saying so) and nothing is counted against it."""
    from service.archive.store import ArchiveUnavailable, LocalStore

    scheduler, pool, run_id, client, _ = world
    twin = Scheduler(lite_engine, lite_settings, pool)
    _finished(client, pool)

    def away(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ArchiveUnavailable("the archive's store cannot be reached (EndpointConnectionError); try again later")

    with monkeypatch.context() as patch:
        patch.setattr(LocalStore, "put", away)
        for _ in range(3 * lite_settings.max_finish_failures):
            scheduler.reconcile()
            twin.reconcile()
            _backdate_failure(lite_engine, run_id, 60)
        run = current_run(lite_engine, run_id)
        assert run.state == RunState.running and "waiting for the observatory" in run.message
        assert "cannot be reached" in run.message and _attempt(lite_engine, run_id, 1).finish_failures == 0
    scheduler.reconcile()
    assert current_run(lite_engine, run_id).state == RunState.succeeded


def test_two_pools_on_one_database_touch_only_their_own_runs(world, lite_engine, lite_settings) -> None:
    scheduler, pool, run_id, _, _ = world
    scheduler.claim_pool()
    other_pool = ScriptedPool(head="another-head")
    other_pool.dashboard_url = "http://another-cluster"
    other = Scheduler(lite_engine, lite_settings.model_copy(update={"pool_name": "lab"}), other_pool)
    other.claim_pool()
    other.reconcile()
    other.dispatch()
    assert current_run(lite_engine, run_id).state == RunState.running and other_pool.requests == []
    # The same pool name on another cluster is refused: each would think the other's runs lost.
    impostor = Scheduler(lite_engine, lite_settings, other_pool)
    with pytest.raises(Conflict, match="driven by another scheduler"):
        impostor.claim_pool()


def test_two_schedulers_charge_each_span_once(world, lite_engine, lite_settings, monkeypatch) -> None:
    scheduler, pool, run_id, client, _ = world
    FakeJob(client, pool.token()).start()
    _stop_clock(monkeypatch, _backdate(lite_engine, run_id, 1, 45) + timedelta(seconds=45))
    pool.set(pool.submitted[0], JobState.running)
    twin = Scheduler(lite_engine, lite_settings, pool)
    scheduler.reconcile()
    twin.reconcile()
    scheduler.reconcile()
    assert 44 <= _charged(lite_engine, run_id) <= 47
    with Session(lite_engine) as session:
        keys = [e.key for e in entries_for_run(session, run_id)]
    assert len(keys) == len(set(keys))


class SchedulerKilled(BaseException):
    """The scheduler process dies here: nothing after this line of dispatch runs (not even its except clauses)."""


class OneSlotPool(ScriptedPool):
    """A pool of one node with room for a single run; `die_on_submit` kills the scheduler before or after Ray
    takes the job."""

    def __init__(self, die_on_submit: str | None = None) -> None:
        super().__init__()
        self.die_on_submit = die_on_submit

    def nodes(self) -> list[dict]:
        return [{"node_id": self.head, "is_head_node": True, "state": "ALIVE", "resources_total": {"CPU": 1}}]

    def submit(self, request: JobRequest) -> str:
        if self.die_on_submit == "before":
            self.die_on_submit = None
            raise SchedulerKilled
        super().submit(request)
        if self.die_on_submit == "after":
            self.die_on_submit = None
            raise SchedulerKilled
        return request.submission_id


def _expire_claim(engine: Engine, run_id: int) -> None:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        run.claim_expires_at = utcnow() - timedelta(seconds=1)
        session.add(run)
        session.commit()


def test_a_scheduler_killed_mid_dispatch_does_not_block_the_pool(engine, session, settings) -> None:
    """The attempt row was written and Ray never got the job: once the claim expires, the attempt is retired (it
    held the node's only slot) and the run is placed again; before the expiry nothing is touched."""
    admin = create_user(session, Role.admin)
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin)))
    pool = OneSlotPool(die_on_submit="before")
    with pytest.raises(SchedulerKilled):
        Scheduler(engine, settings, pool).dispatch()
    assert _attempt(engine, run.id, 1).state == AttemptState.starting and pool.requests == []
    survivor = Scheduler(engine, settings, pool)
    assert survivor.dispatch() == 0 and _attempt(engine, run.id, 1).state == AttemptState.starting  # still claimed
    _expire_claim(engine, run.id)
    assert survivor.dispatch() == 1
    assert _attempt(engine, run.id, 1).state == AttemptState.failed
    assert "never reached the pool" in _attempt(engine, run.id, 1).message
    assert _attempt(engine, run.id, 2).state == AttemptState.running and len(pool.requests) == 1
    assert current_run(engine, run.id).state == RunState.running


def test_a_job_submitted_by_a_scheduler_that_then_died_is_adopted_once(engine, session, settings) -> None:
    admin = create_user(session, Role.admin)
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin)))
    pool = OneSlotPool(die_on_submit="after")
    with pytest.raises(SchedulerKilled):
        Scheduler(engine, settings, pool).dispatch()
    _expire_claim(engine, run.id)
    survivor = Scheduler(engine, settings, pool)
    assert survivor.dispatch() == 1 and survivor.dispatch() == 0
    assert _attempt(engine, run.id, 1).state == AttemptState.running and len(pool.requests) == 1
    assert current_run(engine, run.id).state == RunState.running and current_run(engine, run.id).attempt == 1
