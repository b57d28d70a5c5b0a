"""DiLoCo: the arithmetic (int8 transport, the outer Nesterov step by hand), plain training as its one-worker case,
and the observatory as the coordinator of a run two scripted nodes train together: rounds that close when all
have sent or at their timeout, a late worker dropped, a lost worker charged up to its last contribution taken,
one worker making the outputs."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from jobs import diloco, rounds
from jobs.config import TrainConfig
from jobs.train import build_trainer, train
from scheduler.loop import Scheduler
from scheduler.ray_backend import NODE_ID_LABEL, JobState
from service.attempts.service import attempts_of, new_attempt
from service.ledger.service import run_charged
from service.models import AttemptState, Machine, Role, Run, RunAttempt, RunState, User
from service.pool.machines import move_runs_off
from service.pool.standing import MACHINE_LABEL
from service.rounds.service import rounds_of
from service.timeutil import utcnow
from tests.factories import TINY_TRAIN, auth_headers, award, create_call, create_machine, create_proposal, create_user
from tests.pools import TRAIN_FILES, FakeJob, ScriptedPool, current_run


def test_int8_pseudo_gradients_come_back_within_half_their_scale() -> None:
    rng = np.random.default_rng(0)
    base = {"a": rng.normal(size=(64, 9)).astype(np.float32), "b": np.zeros(7, np.float32),
            "c": rng.normal(size=3).astype(np.float32)}
    local = {"a": base["a"] - rng.normal(scale=0.01, size=(64, 9)).astype(np.float32), "b": base["b"],
             "c": base["c"] + np.float32(3.0)}
    exact = diloco.pseudo_gradient(base, local)
    payload = diloco.encode(base, local, "int8")
    back = diloco.decode(payload, base)
    for name, value in exact.items():
        scale = max(float(np.max(np.abs(value))), 0.0) / 127 or 1.0
        assert np.max(np.abs(back[name] - value)) <= scale / 2 + 1e-12, name
    assert not np.any(back["b"])  # a tensor of zeros stays zeros
    assert len(payload) < sum(v.size for v in base.values()) + 1000  # a byte a parameter (and a header)
    half = diloco.decode(diloco.encode(base, local, "fp16"), base)
    assert np.allclose(half["a"], exact["a"], rtol=1e-3, atol=1e-6)
    with pytest.raises(diloco.PayloadError, match="names differ"):
        diloco.decode(payload, {"a": base["a"]})
    with pytest.raises(diloco.PayloadError, match="shape"):
        diloco.decode(payload, {**base, "c": np.zeros(4, np.float32)})
    with pytest.raises(diloco.PayloadError):
        diloco.decode(b"not a safetensors file", base)


def test_int8_updates_keep_the_workers_copy_within_half_a_scale_of_the_exact_weights_round_after_round() -> None:
    rng = np.random.default_rng(3)
    exact = {"a": rng.normal(size=(64, 32)).astype(np.float32), "b": rng.normal(size=200).astype(np.float32)}
    held = {name: value.copy() for name, value in exact.items()}
    for number in range(1, 25):  # the coordinator's exact weights move; the workers' copy follows by updates
        exact = {name: (value - rng.normal(scale=0.05, size=value.shape)).astype(np.float32)
                 for name, value in exact.items()}
        data, shipped = diloco.pack_update(held, exact, round_number=number, step=10 * number)
        elsewhere = diloco.apply_update(held, data)  # a worker, with the same weights, makes the same bits
        assert all(np.array_equal(elsewhere[name], shipped[name]) for name in exact)
        assert len(data) < sum(v.nbytes for v in exact.values()) / 3  # a quarter of fp32, and the scales
        for name, value in exact.items():
            change = np.abs(value.astype(np.float64) - held[name].astype(np.float64)).max()
            # Within half a scale of this round's change (plus float32 rounding): no error builds up over rounds.
            assert np.abs(shipped[name].astype(np.float64) - value).max() <= change / 127 / 2 + 1e-6
        held = shipped
    with pytest.raises(diloco.PayloadError):
        diloco.apply_update({"a": held["a"]}, data)  # names that are not the held weights'
    momentum, master = diloco.unpack_outer(diloco.pack_outer(held, exact, round_number=1, step=1))
    assert master is not None and np.array_equal(master["b"], exact["b"]) and set(momentum) == {"a", "b"}
    assert diloco.unpack_outer(diloco.pack_weights(held, round_number=1, step=1))[1] is None


def test_the_outer_nesterov_step_matches_a_hand_computed_example() -> None:
    """Two workers (1 and 3 samples' worth) send the same pseudo-gradients in two rounds; lr 0.7, momentum 0.9.
    Round 1: mean = 0.25 d1 + 0.75 d2 = [0.25, 0.1]; buffer = mean; update = mean + 0.9 buffer = [0.475, 0.19];
    W = [1, 2] - 0.7 update = [0.6675, 1.867]. Round 2: buffer = 0.9 [0.25, 0.1] + mean = [0.475, 0.19];
    update = mean + 0.9 buffer = [0.6775, 0.271]; W = [0.6675 - 0.47425, 1.867 - 0.1897] = [0.19325, 1.6773]."""
    d1, d2 = np.array([0.1, -0.2]), np.array([0.3, 0.2])
    coordinator = diloco.LocalCoordinator(diloco.Outer(0.7, 0.9), expected=2)
    coordinator.begin({"w": np.array([1.0, 2.0], np.float32)})
    for number, expected in ((0, [0.6675, 1.867]), (1, [0.19325, 1.6773])):
        base = coordinator.weights
        for worker, (delta, samples) in enumerate(((d1, 1), (d2, 3))):
            local = {"w": (base["w"].astype(np.float64) - delta).astype(np.float32)}
            assert coordinator.contribute(worker, number, diloco.encode(base, local, "fp32"), samples, 0.5, 10)
        assert np.allclose(coordinator.weights["w"], expected, atol=1e-6), coordinator.weights
    assert [r.number for r in coordinator.rounds] == [0, 1] and coordinator.step == 20
    assert not coordinator.contribute(0, 0, b"", 1, 0.5, 10)  # a closed round takes nothing more


def test_one_worker_with_outer_lr_1_and_no_momentum_is_plain_training_to_the_weight(tmp_path: Path) -> None:
    cfg = TrainConfig(**{**TINY_TRAIN, "steps": 24, "checkpoint_every": 1000, "ema_decay": 0.99}, sync_every=5,
                      sync_dtype="fp32", outer_lr=1.0, outer_momentum=0.0)
    plain, *_ = train(cfg, tmp_path / "plain", torch.device("cpu"), report=False)
    coordinator = diloco.LocalCoordinator(diloco.Outer(1.0, 0.0), expected=1)
    trainer = build_trainer(cfg, torch.device("cpu"))
    worker, state = rounds.train_in_rounds(cfg, rounds.LocalExchange(coordinator, cfg.steps), trainer, report=False)
    assert state.finished and len(coordinator.rounds) == 5 and worker.contributed == 5  # 5+5+5+5+4 steps
    expected = dict(plain.named_parameters())
    for name, param in trainer.unet.named_parameters():
        assert torch.equal(param, expected[name]), name
    # With DiLoCo's own outer step the weights differ: the test above can fail.
    moved = diloco.LocalCoordinator(diloco.Outer(0.7, 0.9), expected=1)
    other = build_trainer(cfg, torch.device("cpu"))
    rounds.train_in_rounds(cfg, rounds.LocalExchange(moved, cfg.steps), other, report=False)
    assert not all(torch.equal(p, expected[n]) for n, p in other.unet.named_parameters())


# ---- the observatory as the coordinator ----------------------------------------------------------------------


class TwoNodes(ScriptedPool):
    """The head and an owner's approved machine, both taking work."""

    def __init__(self, machine_id: int) -> None:
        super().__init__()
        self.machine_id = machine_id

    def nodes(self) -> list[dict]:
        head, worker = super().nodes()
        return [head, {**worker, "labels": {MACHINE_LABEL: str(self.machine_id)}}]


@dataclass
class Pair:
    """A run in rounds placed on two nodes, each worker's job started."""

    scheduler: Scheduler
    pool: TwoNodes
    run: Run
    first: FakeJob  # worker 0
    second: FakeJob  # worker 1
    pi: User
    machine: Machine


def _pair(lite_engine: Engine, lite_session: Session, lite_settings, lite_client: TestClient,  # type: ignore[no-untyped-def]
          plan: dict) -> Pair:
    admin, pi, owner = (create_user(lite_session, Role.admin), create_user(lite_session),
                        create_user(lite_session))
    machine, machine_token = create_machine(lite_session, owner, admin, cpus=4)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin),
                                                        job_plan=plan))
    pool = TwoNodes(machine.id)
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch(pool.nodes()) == 2  # the run, and at once a second worker on the other node
    assert scheduler.dispatch(pool.nodes()) == 0  # two workers wanted, two placed
    jobs = [FakeJob(lite_client, pool.token(i)) if "OBSERVATORY_JOB_TOKEN" in pool.requests[i].env
            else FakeJob.claimed(lite_client, pool, machine_token, i) for i in (0, 1)]
    for job, submission in zip(jobs, pool.submitted, strict=True):
        assert job.start().status_code == 200
        pool.set(submission, JobState.running)
    scheduler.reconcile(pool.nodes())
    return Pair(scheduler, pool, run, *jobs, pi, machine)


def _payload(base: dict[str, np.ndarray], delta: float) -> bytes:
    return diloco.encode(base, {"w": base["w"] - np.float32(delta)}, "fp32")


def _put(job: FakeJob, path: str, data: bytes, **params: object):  # type: ignore[no-untyped-def]
    return job.client.put(path, content=data, params=params,
                          headers={**job.headers, "X-Content-SHA256": hashlib.sha256(data).hexdigest()})


def _weights(job: FakeJob, sha: str) -> dict[str, np.ndarray]:
    response = job.client.get(f"/api/job/inputs/{sha}", headers=job.headers)
    assert response.status_code == 200, response.text
    return diloco.unpack_weights(response.content)[0]


def test_the_observatory_coordinates_two_workers_and_charges_a_lost_one_to_its_round(
        engine: Engine, session: Session, settings, client: TestClient) -> None:
    """On SQLite and PostgreSQL."""
    lite_engine, lite_session = engine, session
    plan = {**TINY_TRAIN, "steps": 20, "workers": 2, "sync_every": 10, "sync_dtype": "fp32", "outer_lr": 1.0,
            "outer_momentum": 0.0, "sync_timeout_s": 1}
    pair = _pair(engine, session, settings, client, plan)
    scheduler, pool, run, first, second = pair.scheduler, pair.pool, pair.run, pair.first, pair.second
    with Session(lite_engine) as session:
        a1, a2 = attempts_of(session, run.id)
    assert (a1.worker, a2.worker) == (0, 1)
    assert {r.label_selector[NODE_ID_LABEL] for r in pool.requests} == {"head-node", "worker-node"}
    assert first.client.get("/api/job/rounds", headers=first.headers).json()["global_sha256"] is None

    base = {"w": np.array([1.0, 2.0, 3.0], np.float32)}
    packed = diloco.pack_weights(base, round_number=0, step=0)
    assert _put(first, "/api/job/rounds/base", packed).status_code == 201
    assert _put(second, "/api/job/rounds/base", packed).status_code == 409  # the first one's stand
    view = second.client.get("/api/job/rounds", headers=second.headers).json()
    assert view["round"] == 0 and view["worker"] == 1 and view["workers"] == 2 and not view["finished"]
    assert np.array_equal(_weights(second, view["global_sha256"])["w"], base["w"])
    assert _put(first, "/api/job/rounds/0", b"junk", samples=8, steps=10).status_code == 422

    # Round 0: both send; it closes on the second, with the samples-weighted mean (1:3) of the pseudo-gradients.
    assert _put(first, "/api/job/rounds/0", _payload(base, 0.4), samples=8, steps=10, loss=0.5).json()["accepted"]
    assert current_run(lite_engine, run.id).resume_step == 0  # still waiting for the second worker
    assert _put(second, "/api/job/rounds/0", _payload(base, 0.8), samples=24, steps=10,
                loss=0.3).json()["accepted"]
    view = first.client.get("/api/job/rounds", params={"after": 0}, headers=first.headers).json()
    assert view["round"] == 1 and view["step"] == 10
    global_1 = _weights(first, view["global_sha256"])
    assert np.allclose(global_1["w"], base["w"] - 0.7, atol=1e-6)  # 0.25 * 0.4 + 0.75 * 0.8
    with Session(lite_engine) as session:
        (closed, opened) = rounds_of(session, run.id)
    assert closed.state == "closed" and {c["worker"] for c in closed.contributors} == {0, 1}
    assert closed.samples == 32 and closed.loss == pytest.approx(0.35) and closed.bytes_in > 0
    assert opened.state == "open" and opened.base_sha256 == view["global_sha256"]

    # Round 1: the second worker's node dies before it sends; the round closes at its timeout with the first alone.
    assert _put(first, "/api/job/rounds/1", _payload(global_1, 0.1), samples=8, steps=10,
                loss=0.2).json()["accepted"]
    pool.set(pool.submitted[1], JobState.failed, error_type="JOB_SUPERVISOR_ACTOR_DIED")
    scheduler.reconcile(pool.nodes())
    with Session(lite_engine) as session:
        lost = attempts_of(session, run.id)[1]
    assert lost.state == AttemptState.lost and current_run(lite_engine, run.id).state == RunState.running
    time.sleep(1.1)
    view = first.client.get("/api/job/rounds", params={"after": 1, "wait_s": 1}, headers=first.headers).json()
    assert view["finished"] and view["finisher"] and view["step"] == 20
    assert _put(second, "/api/job/rounds/1", _payload(global_1, 0.1), samples=8, steps=10).status_code == 401

    # The lost worker is charged up to its contribution that round 0 took, not up to its end.
    with Session(lite_engine) as session:
        lost = attempts_of(session, run.id)[1]
        closed = rounds_of(session, run.id)
        charged = run_charged(session, run.id, 2)
    assert lost.checkpoint_at is not None and lost.checkpoint_step == 10
    assert charged == int((lost.checkpoint_at - lost.started_at).total_seconds())
    assert [r.state for r in closed] == ["closed", "closed"] and [c["worker"] for c in closed[1].contributors] == [0]

    # The run page shows the rounds: who contributed, the bytes, the global loss.
    page = " ".join(first.client.get(f"/runs/{run.id}", headers=auth_headers(lite_session, pair.pi)).text.split())
    assert "<h2>Rounds</h2>" in page, page[page.find("<main"):][:3000]
    section = page[page.find("<h2>Rounds</h2>"):page.find("<h2>Attempts</h2>")]
    assert "2 rounds closed" in section and "Global loss per round" in section, section
    assert "0 (attempt 1), 1 (attempt 2) of 2 live" in page and "0 (attempt 1) of 1 live" in page
    assert "0.3500" in page  # round 0's loss, by samples

    first.outputs(TRAIN_FILES)
    assert first.end(0).status_code == 204
    pool.set(pool.submitted[0], JobState.succeeded)
    scheduler.reconcile(pool.nodes())
    assert current_run(lite_engine, run.id).state == RunState.succeeded


class ChannelOf:
    """A scripted node's job channel as jobs.runner.Channel answers a worker: the response, or ChannelError."""

    def __init__(self, job: FakeJob) -> None:
        self.job, self.fetched = job, []

    def call(self, method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
        from jobs.runner import ChannelError

        if path.startswith("/api/job/inputs/"):
            self.fetched.append(path.rsplit("/", 1)[1])
        response = self.job.client.request(method, path, params=kwargs.get("params"), content=kwargs.get("content"),
                                           headers={**self.job.headers, **(kwargs.get("headers") or {})})
        if response.status_code >= 400:
            raise ChannelError(f"{response.status_code}: {response.text}")
        return response


def test_global_weights_go_down_as_int8_updates_that_every_worker_applies_to_the_same_bits(
        lite_engine: Engine, lite_session: Session, lite_settings, lite_client: TestClient, tmp_path: Path) -> None:
    plan = {**TINY_TRAIN, "steps": 30, "workers": 2, "sync_every": 10, "sync_dtype": "int8",
            "sync_down_dtype": "int8", "sync_timeout_s": 60}
    pair = _pair(lite_engine, lite_session, lite_settings, lite_client, plan)
    channels = [ChannelOf(pair.first), ChannelOf(pair.second)]
    exchanges = [rounds.ChannelExchange(channel, tmp_path / f"node-{i}") for i, channel in enumerate(channels)]
    for exchange in exchanges:
        exchange.cache.mkdir()
    rng = np.random.default_rng(5)
    initial = {"w": rng.normal(size=(40, 30)).astype(np.float32), "b": rng.normal(size=30).astype(np.float32)}
    states = [exchange.begin(initial) for exchange in exchanges]  # the first sets them; the second fetches them
    local = diloco.LocalCoordinator(diloco.Outer(), expected=2, down="int8", total_steps=30)
    local.begin(initial)
    for number in range(3):
        assert [s.round for s in states] == [number, number]
        assert all(np.array_equal(states[0].weights[n], states[1].weights[n]) for n in initial)  # the same bits
        assert all(np.array_equal(states[0].weights[n], local.weights[n]) for n in initial)  # as the local rules
        for worker, (exchange, state) in enumerate(zip(exchanges, states, strict=True)):
            trained = {n: (v - rng.normal(scale=0.02, size=v.shape)).astype(np.float32)
                       for n, v in state.weights.items()}
            payload = diloco.encode(state.weights, trained, "int8")
            assert exchange.contribute(number, payload, samples=8, loss=0.1, steps=10)
            local.contribute(worker, number, payload, 8, 0.1, 10)
        states = [exchange.wait(number) for exchange in exchanges]
    assert all(s.finished for s in states) and sum(s.finisher for s in states) == 1
    assert all(np.array_equal(states[0].weights[n], local.weights[n]) for n in initial)
    with Session(lite_engine) as session:
        history = rounds_of(session, pair.run.id)
    # Rounds 0 and 1 sent int8 updates, which the workers applied (fetching no weights whole); the last round's
    # weights, the run's result, went down whole and exact.
    assert [bool(r.update_sha256) for r in history] == [True, True, False]
    for channel in channels:
        assert history[0].update_sha256 in channel.fetched and history[1].update_sha256 in channel.fetched
        assert history[0].result_sha256 not in channel.fetched and history[1].result_sha256 not in channel.fetched
        assert history[2].result_sha256 in channel.fetched
    # The worker making the outputs finishes first (a loaded machine): the other, asking later, is still not one.
    with Session(lite_engine) as session:
        session.execute(update(RunAttempt).where(RunAttempt.id == history[-1].finisher_attempt_id)
                        .values(state=AttemptState.succeeded))
        session.commit()
    other = next(e for e, s in zip(exchanges, states, strict=True) if not s.finisher)
    assert other.view(after=2)["finished"] and not other.view(after=2)["finisher"]
    whole = len(diloco.pack_weights(initial, round_number=1, step=10))
    assert history[0].bytes_out / 2 < whole / 2 and history[2].bytes_out / 2 >= whole  # per worker: down, or whole


def test_a_leaving_machine_takes_only_its_worker_with_it(lite_engine: Engine, lite_session: Session, lite_settings,
                                                         lite_client: TestClient) -> None:
    plan = {**TINY_TRAIN, "steps": 30, "workers": 2, "sync_every": 10}
    pair = _pair(lite_engine, lite_session, lite_settings, lite_client, plan)
    with Session(lite_engine) as session:
        assert move_runs_off(session, session.get(Machine, pair.machine.id), "its owner's cap was reached") == 1
        session.commit()
    assert pair.second.log("training\n")["stop"] == "move"  # the machine's worker is asked to stop
    assert pair.first.log("training\n")["stop"] is None  # the head's goes on
    assert pair.second.end(0, stopped=True).status_code == 204
    pair.pool.set(pair.pool.submitted[1], JobState.stopped)
    pair.scheduler.reconcile(pair.pool.nodes())
    with Session(lite_engine) as session:
        states = [a.state for a in attempts_of(session, pair.run.id)]
    assert states == [AttemptState.running, AttemptState.stopped]
    assert current_run(lite_engine, pair.run.id).state == RunState.running


def test_a_late_contribution_is_dropped_and_said_so(lite_engine: Engine, lite_session: Session, lite_settings,
                                                    lite_client: TestClient) -> None:
    plan = {**TINY_TRAIN, "steps": 30, "workers": 2, "sync_every": 10, "sync_timeout_s": 1}
    pair = _pair(lite_engine, lite_session, lite_settings, lite_client, plan)
    run, fast, slow = pair.run, pair.first, pair.second
    base = {"w": np.ones(4, np.float32)}
    _put(fast, "/api/job/rounds/base", diloco.pack_weights(base, round_number=0, step=0))
    assert _put(fast, "/api/job/rounds/0", _payload(base, 0.1), samples=8, steps=10).json()["accepted"]
    time.sleep(1.1)
    assert fast.client.get("/api/job/rounds", params={"after": 0}, headers=fast.headers).json()["round"] == 1
    late = _put(slow, "/api/job/rounds/0", _payload(base, 0.1), samples=8, steps=10).json()
    assert not late["accepted"] and "closed without it" in late["reason"]
    with Session(lite_engine) as session:
        first_round = rounds_of(session, run.id)[0]
    assert [entry["worker"] for entry in first_round.late] == [1]
    assert [c["worker"] for c in first_round.contributors] == [0]


def test_a_run_that_loses_every_worker_resumes_from_its_last_round(lite_engine: Engine, lite_session: Session,
                                                                   lite_settings, lite_client: TestClient) -> None:
    """No node holds what the run needs: with every worker gone, the run is queued and a new worker starts from the
    global weights of the last round that closed."""
    plan = {**TINY_TRAIN, "steps": 30, "workers": 2, "sync_every": 10, "sync_dtype": "int8"}
    pair = _pair(lite_engine, lite_session, lite_settings, lite_client, plan)
    base = {"w": np.ones(4, np.float32)}
    _put(pair.first, "/api/job/rounds/base", diloco.pack_weights(base, round_number=0, step=0))
    for job in (pair.first, pair.second):
        assert _put(job, "/api/job/rounds/0", _payload(base, 0.1), samples=8, steps=10).json()["accepted"]
    view = pair.first.client.get("/api/job/rounds", headers=pair.first.headers).json()
    assert view["round"] == 1
    for submission in pair.pool.submitted:
        pair.pool.set(submission, JobState.failed, error_type="JOB_SUPERVISOR_ACTOR_DIED")
    pair.scheduler.reconcile(pair.pool.nodes())
    run = current_run(lite_engine, pair.run.id)
    assert run.state == RunState.queued and run.resume_step == 10 and run.resume_sha256 == view["global_sha256"]
    assert pair.scheduler.dispatch(pair.pool.nodes()) == 2  # placed again, and its second worker with it
    fresh = FakeJob(lite_client, pair.pool.token(2))
    hello = fresh.start().json()
    assert hello["resume_sha256"] == view["global_sha256"]
    assert "resume_state" not in {i["field"] for i in hello["inputs"]}  # it fetches the global weights itself
    resumed = fresh.client.get("/api/job/rounds", headers=fresh.headers).json()
    assert (resumed["round"], resumed["step"], resumed["global_sha256"]) == (1, 10, view["global_sha256"])
    assert np.allclose(_weights(fresh, resumed["global_sha256"])["w"], 1 - 0.1 * (1 + 0.9) * 0.7, atol=0.01)


def test_a_worker_that_keeps_failing_ends_the_run_instead_of_being_replaced_forever(
        lite_engine: Engine, lite_session: Session, lite_settings, lite_client: TestClient) -> None:
    plan = {**TINY_TRAIN, "steps": 30, "workers": 2, "sync_every": 10}
    pair = _pair(lite_engine, lite_session, lite_settings, lite_client, plan)
    failures = 0
    while current_run(lite_engine, pair.run.id).state == RunState.running:
        assert failures <= 11, "the failing worker was replaced without end"
        pair.pool.set(pair.pool.submitted[-1], JobState.failed, exit_code=1, message="a bug in the worker")
        pair.scheduler.reconcile(pair.pool.nodes())
        failures += 1
        pair.scheduler.dispatch(pair.pool.nodes())  # a free node takes the failed worker's place
    run = current_run(lite_engine, pair.run.id)
    assert run.state == RunState.failed and "failed or were lost 11 times" in run.message, run.message
    assert failures == 11
    # The worker still going is told to stop: its run has ended.
    assert pair.first.log("training\n")["stop"] == "finished"


def test_a_worker_whose_scheduler_died_before_submitting_it_is_settled(
        lite_engine: Engine, lite_session: Session, lite_settings, lite_client: TestClient) -> None:
    plan = {**TINY_TRAIN, "steps": 30, "workers": 2, "sync_every": 10}
    pair = _pair(lite_engine, lite_session, lite_settings, lite_client, plan)
    with Session(lite_engine) as session:  # what a scheduler left when it died between writing and submitting
        run = session.get(Run, pair.run.id)
        ghost, _ = new_attempt(session, run, pool=lite_settings.pool_name, node_id="head-node", worker=1)
        ghost.created_at = utcnow() - timedelta(seconds=lite_settings.claim_ttl_s + 1)
        session.add(ghost)
        session.commit()
        ghost_id = ghost.id
    pair.scheduler.dispatch(pair.pool.nodes())
    with Session(lite_engine) as session:
        settled = session.get(RunAttempt, ghost_id)
    assert settled.state == AttemptState.failed and "never reached the pool" in settled.message
