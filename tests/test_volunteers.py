"""Volunteers' agents, for real: `observatory volunteer` subprocesses pull units from a live portal, run them in
the sandbox, and their results count once another volunteer's agree; a cheater is outvoted and its trust zeroed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from jobs.config import TrainConfig
from jobs.sandbox import problem
from jobs.train import main as train_main
from scheduler.dispatch import Dispatcher
from scheduler.volunteers import settle_volunteers
from service.archive.service import list_artifacts, store_for
from service.config import Settings
from service.db import writer
from service.ledger.service import run_charged
from service.models import Artifact, Machine, Role, Run, RunAttempt, RunState, VolunteerCredit
from tests import netns
from tests.factories import TINY_TRAIN, auth_headers, award, create_call, create_proposal, create_user, registered_model
from tests.live import live_server

pytestmark = pytest.mark.skipif(problem() is not None, reason=f"no sandbox here: {problem()}")
ROOT = Path(__file__).resolve().parent.parent


class NoRay:
    """The Ray pool of this observatory: empty, so that every unit goes to a volunteer's agent."""

    dashboard_url = "http://127.0.0.1:9"

    def nodes(self) -> list[dict]:
        return []

    def submit(self, request):  # noqa: ANN001
        raise AssertionError("nothing is submitted to Ray here")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("model")
    train_main(TrainConfig.model_validate({**TINY_TRAIN, "resolution": 16}), out)
    return (out / "checkpoint.pt").read_bytes()


@pytest.fixture
def observatory(lite_settings: Settings, lite_engine: Engine) -> Iterator[Callable[..., str]]:
    """Starts the portal on a real port, and a scheduler ticking every half second beside it, once the test has
    made its data (so that no test write waits on the scheduler's)."""
    stop = threading.Event()
    engine = writer(lite_engine)  # as the scheduler's: its transactions check, then write
    dispatcher = Dispatcher(engine, lite_settings, NoRay(), store_for(lite_settings))
    started: list = []

    def tick() -> None:
        while not stop.is_set():
            try:
                dispatcher.dispatch([])
                settle_volunteers(engine, lite_settings, store_for(lite_settings))
            except OperationalError:  # SQLite busy with the portal's own writes: the next tick goes on
                pass
            stop.wait(0.5)

    def start(host: netns.Host | None = None) -> str:
        """The portal on loopback, or on `host`'s address inside its namespace."""
        server = live_server(lite_settings, lite_engine, host=host.address if host else "127.0.0.1")
        url = host.call(server.__enter__) if host else server.__enter__()
        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        started.append((server, thread))
        return url

    yield start
    stop.set()
    for server, thread in started:
        thread.join(timeout=30)
        server.__exit__(None, None, None)


def volunteer_machine(client: TestClient, session: Session, name: str) -> tuple[int, str, dict[str, str]]:
    """An owner registers a volunteer's machine (no admin needed) and shows its command: id, credential, headers."""
    owner = create_user(session, Role.owner)
    headers = auth_headers(session, owner)
    made = client.post("/api/machines", headers=headers, json={"name": name, "volunteer": True})
    assert made.status_code == 201 and made.json()["state"] == "approved", made.text
    ticket = client.post(f"/api/machines/{made.json()['id']}/join-token", headers=headers).json()
    assert ticket["command"].startswith(f"OBSERVATORY_MACHINE_TOKEN={ticket['token']} observatory volunteer ")
    return made.json()["id"], ticket["token"], headers


def start_agent(url: str, credential: str, folder: Path, *, cheat: str | None = None,
                host: netns.Host | None = None) -> subprocess.Popen:
    """An agent as a volunteer starts it, on this machine or inside `host` (a network namespace of its own); a
    cheating one (tests.cheating_agent) cheats as `cheat` says."""
    module = ["-m", "tests.cheating_agent"] if cheat else ["-m", "observatory", "volunteer"]
    env = {**os.environ, "OBSERVATORY_MACHINE_TOKEN": credential, "OBSERVATORY_CHEAT": cheat or "",
           "OMP_NUM_THREADS": "1"}  # the agents' jobs share this machine's cores
    log = folder.with_suffix(".log").open("w")
    command = [sys.executable, *module, url, "--folder", str(folder), "--memory-gb", "4"]
    return subprocess.Popen(host.command(command) if host else command, cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(engine: Engine, run_ids: list[int], agents: list[subprocess.Popen], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with Session(engine) as session:  # a fresh read each time (SQLite keeps a transaction's snapshot)
            runs = [session.get(Run, i) for i in run_ids]
        if all(run.state == RunState.succeeded for run in runs):
            return
        failed = [run.message for run in runs if run.state == RunState.failed]
        quit_ = [agent.args for agent in agents if agent.poll() is not None]
        if failed or quit_ or time.monotonic() > deadline:
            raise AssertionError(f"runs: {[(r.state, r.message) for r in runs]}; agents: {stop(agents)}")
        time.sleep(1)


def stop(agents: list[subprocess.Popen]) -> str:
    """Stop the agents (as Ctrl-C would); what they printed."""
    for agent in agents:
        if agent.poll() is None:
            agent.terminate()
    for agent in agents:
        agent.wait(timeout=60)
    return "\n".join(Path(agent.args[agent.args.index("--folder") + 1]).with_suffix(".log").read_text()
                     for agent in agents)


def first_copy_taken(engine: Engine, run_id: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        with Session(engine) as fresh:
            if fresh.exec(select(RunAttempt).where(RunAttempt.run_id == run_id)).all():
                return
        assert time.monotonic() < deadline
        time.sleep(0.5)


def units(lite_client: TestClient, lite_session: Session, lite_settings: Settings, checkpoint: bytes,
          plans: list[dict]) -> list[int]:
    admin = create_user(lite_session, Role.admin)
    ref, _ = registered_model(lite_client, lite_session, lite_settings, admin, checkpoint,
                              {**TINY_TRAIN, "resolution": 16})
    call = create_call(lite_session, admin, capacity=100)
    runs = [award(lite_session, admin, create_proposal(lite_session, create_user(lite_session), call,
                                                       job_plan={**plan, "model": ref}))[1]
            for plan in plans]
    return [run.id for run in runs]


def test_two_volunteers_validate_a_sample_and_a_replication_unit(
        observatory: Callable[[], str], lite_client: TestClient, lite_session: Session, lite_settings: Settings,
        checkpoint: bytes, tmp_path: Path) -> None:
    run_ids = units(lite_client, lite_session, lite_settings, checkpoint, [
        {"kind": "sample", "seeds": [3, 5], "inference_steps": 3},
        {"kind": "replication", "samples": 4, "inference_steps": 3}])
    first, second = (volunteer_machine(lite_client, lite_session, name) for name in ("den", "garage"))
    # Each agent on a host of its own, the portal on a third, where this machine allows network namespaces.
    with (netns.lan(["portal", "den", "garage"]) if netns.available() is None else nullcontext()) as hosts:
        hosts = hosts or {}
        url = observatory(hosts.get("portal"))
        agents = [start_agent(url, first[1], tmp_path / "a", host=hosts.get("den")),
                  start_agent(url, second[1], tmp_path / "b", host=hosts.get("garage"))]
        try:
            wait_for(lite_session.get_bind(), run_ids, agents)
            # Revoked at once: the agent's next ask is refused, and it stops saying why.
            assert lite_client.delete(f"/api/machines/{first[0]}/join-token", headers=first[2]).status_code == 200
            assert agents[0].wait(timeout=60) == 2  # the CLI's exit for a refusal
        finally:
            output = stop(agents)
    assert not hosts or url.startswith(f"http://{hosts['portal'].address}:")
    assert "the portal refused this machine (401)" in output, output
    assert f"run {run_ids[0]}: sample 100%" in output  # progress, as a volunteer reads it
    assert (tmp_path / "a" / "credential").stat().st_mode & 0o777 == 0o600
    for run_id in run_ids:
        run = lite_session.get(Run, run_id)
        assert run.state == RunState.succeeded and "2 volunteers' results agreed" in run.message, run.message
        attempts = lite_session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id)).all()
        assert sorted(a.machine_id for a in attempts) == sorted([first[0], second[0]])
        assert {a.verdict for a in attempts} == {"agreed"}
        chosen = min(a.number for a in attempts)
        outputs = {a.name: a for a in list_artifacts(lite_session, run_id)}
        held = next(a for a in attempts if a.number == chosen).held_outputs
        for name, entry in held.items():  # the outputs published are one volunteer's, as sent
            assert outputs[name].sha256 == entry["sha256"] and outputs[name].attempt == chosen
        [check] = [a.number for a in attempts if a.number != chosen]
        assert run_charged(lite_session, run_id, chosen) > 0  # the award pays for the result it keeps…
        assert run_charged(lite_session, run_id, check) == 0  # …not for the copy made to check it
    for machine_id in (first[0], second[0]):
        assert lite_session.get(Machine, machine_id).trust == 2
    sample = {a.name for a in list_artifacts(lite_session, run_ids[0])}
    assert {"samples.png", "metrics.json", "job.log", "manifest.json"} <= sample
    # Credit: each agreeing result earns its machine its GPU-seconds; teams and named owners are ranked.
    assert lite_client.patch(f"/api/machines/{second[0]}", headers=second[2],
                             json={"team": "Attic Collective", "show_owner": True}).status_code == 200
    standings = lite_client.get("/api/volunteers").json()
    assert standings["total_units"] == 4 and standings["total_credit"] > 0
    assert [(t["name"], t["units"]) for t in standings["teams"]] == [("Attic Collective", 2)]
    assert [o["units"] for o in standings["owners"]] == [2] and standings["anonymous_credit"] > 0
    mine = lite_client.get(f"/api/machines/{first[0]}", headers=first[2]).json()
    assert mine["units_validated"] == 2 and mine["credit_hours"] > 0
    assert "Attic Collective" in lite_client.get("/volunteers").text


def test_a_cheating_volunteer_is_outvoted_and_loses_its_trust(
        observatory: Callable[[], str], lite_client: TestClient, lite_session: Session, lite_settings: Settings,
        checkpoint: bytes, tmp_path: Path) -> None:
    [run_id] = units(lite_client, lite_session, lite_settings, checkpoint,
                     [{"kind": "sample", "seeds": [3, 5, 8], "inference_steps": 3}])
    cheater = volunteer_machine(lite_client, lite_session, "bogus")
    honest = [volunteer_machine(lite_client, lite_session, name) for name in ("den", "garage")]
    url = observatory()
    agents = [start_agent(url, cheater[1], tmp_path / "c", cheat="noise")]
    try:
        first_copy_taken(lite_session.get_bind(), run_id)  # the cheater's; the honest agents start then
        agents += [start_agent(url, m[1], tmp_path / str(m[0])) for m in honest]
        wait_for(lite_session.get_bind(), [run_id], agents)
    finally:
        stop(agents)
    run = lite_session.get(Run, run_id)
    assert run.state == RunState.succeeded and "2 volunteers' results agreed" in run.message, run.message
    attempts = {a.machine_id: a for a in lite_session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id))}
    assert len(attempts) == 3  # the third copy decided
    assert attempts[cheater[0]].verdict == "wrong" and "proven wrong" in attempts[cheater[0]].message
    assert {attempts[m[0]].verdict for m in honest} == {"agreed"}
    bogus = attempts[cheater[0]].held_outputs["samples.png"]["sha256"]  # its forged picture (its metrics are true)
    published = set(lite_session.exec(select(Artifact.sha256).where(Artifact.run_id == run_id)).all())
    assert bogus not in published and attempts[cheater[0]].number not in set(lite_session.exec(
        select(Artifact.attempt).where(Artifact.run_id == run_id)).all())  # nothing of the cheater's is published
    assert run_charged(lite_session, run_id, attempts[cheater[0]].number) == 0
    cheat_log = lite_session.exec(select(Artifact).where(Artifact.run_id == run_id, Artifact.name ==
                                                         f"attempt-{attempts[cheater[0]].number}.log")).one()
    kept = b"".join(store_for(lite_settings).open_range(cheat_log.sha256)).decode()
    assert "(wrong)" in kept and "(its log is not kept)" in kept and "done: 3 samples" not in kept
    machine = lite_session.get(Machine, cheater[0])
    assert machine.trust == 0 and machine.wrong_results == 1
    credited = set(lite_session.exec(select(VolunteerCredit.machine_id).where(VolunteerCredit.run_id == run_id)))
    assert credited == {m[0] for m in honest}  # nothing credited to the cheater
    assert all(lite_session.get(Machine, m[0]).trust == 1 for m in honest)
    samples = next(a for a in lite_session.exec(select(Artifact).where(Artifact.run_id == run_id,
                                                                       Artifact.name == "samples.png")))
    data = b"".join(store_for(lite_settings).open_range(samples.sha256))
    assert hashlib.sha256(data).hexdigest() == samples.sha256


def test_a_restarted_agent_gives_its_unit_back_and_takes_it_again(
        lite_client: TestClient, lite_session: Session, lite_settings: Settings, lite_engine: Engine,
        checkpoint: bytes) -> None:
    [run_id] = units(lite_client, lite_session, lite_settings, checkpoint, [{"kind": "sample", "seeds": [1]}])
    machine_id, credential, _ = volunteer_machine(lite_client, lite_session, "den")
    agent_headers = {"Authorization": f"Bearer {credential}"}
    hello = lite_client.post("/api/agent/hello", headers=agent_headers, json={"release": "0.2.0", "cpus": 2})
    assert hello.status_code == 200, hello.text
    dispatcher = Dispatcher(writer(lite_engine), lite_settings, NoRay(), store_for(lite_settings))
    assert dispatcher.dispatch([]) == 1
    unit = lite_client.post("/api/agent/work", headers=agent_headers).json()["unit"]
    assert unit["run_id"] == run_id and unit["attempt"] == 1
    job = {"Authorization": f"Bearer {unit['token']}", "X-Machine-Token": credential}
    assert lite_client.post("/api/job/start", headers=job, json={"node_name": "den", "worker_version": hello.json()[
        "release"]}).status_code == 200
    # Asked again without a restart, the unit it has begun is not handed out twice.
    assert lite_client.post("/api/agent/work", headers=agent_headers).json()["unit"] is None
    again = lite_client.post("/api/agent/work", headers=agent_headers, params={"restarted": True})
    assert again.headers["X-Units-Given-Back"] == "1" and again.json()["unit"] is None
    assert lite_client.post("/api/job/log", headers=job, json={"offset": 0, "text": "x"}).status_code == 401
    assert dispatcher.dispatch([]) == 1  # a fresh copy, on the same machine: nobody else has one
    unit = lite_client.post("/api/agent/work", headers=agent_headers).json()["unit"]
    assert unit["run_id"] == run_id and unit["attempt"] == 2
    with Session(lite_engine) as session:
        first = session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id, RunAttempt.number == 1)).one()
        assert first.state == "lost" and "gave the unit back" in first.message


def test_a_unit_past_its_time_limit_is_stopped_and_reported(
        lite_client: TestClient, lite_session: Session, lite_settings: Settings, lite_engine: Engine,
        checkpoint: bytes, tmp_path: Path) -> None:
    from jobs.runner import Attempt, Channel

    [run_id] = units(lite_client, lite_session, lite_settings, checkpoint, [{"kind": "sample", "seeds": [1]}])
    machine_id, credential, _ = volunteer_machine(lite_client, lite_session, "den")
    agent_headers = {"Authorization": f"Bearer {credential}"}
    assert lite_client.post("/api/agent/hello", headers=agent_headers, json={"release": "0.2.0", "cpus": 2}).is_success
    engine = writer(lite_engine)
    assert Dispatcher(engine, lite_settings, NoRay(), store_for(lite_settings)).dispatch([]) == 1
    unit = lite_client.post("/api/agent/work", headers=agent_headers).json()["unit"]
    with live_server(lite_settings, lite_engine) as url:
        channel = Channel(url, unit["token"], machine_token=credential)
        code = Attempt(channel, tmp_path / "agent", time_limit_s=0.5).run()  # less than the job needs to start
    assert code != 0
    settle_volunteers(engine, lite_settings, store_for(lite_settings))
    with Session(lite_engine) as session:
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id)).one()
        assert attempt.state == "failed" and "time limit of 0.5 s" in attempt.message, attempt.message
        assert session.get(Run, run_id).state == RunState.running  # another copy goes out


def test_a_volunteers_training_counts_once_re_run_segments_land_and_one_that_skipped_steps_is_caught(
        observatory: Callable[[], str], lite_client: TestClient, lite_session: Session, lite_settings: Settings,
        tmp_path: Path) -> None:
    """A cheater trains first, doing one step where it counts two: a segment of its training re-run by two other
    volunteers does not land where it said, so nothing of it counts; an honest volunteer trains the unit afresh, two
    of its segments re-run by others land on its states to the bit, and its training is published and charged."""
    lite_settings.checkpoint_ship_interval_s = 0  # every state its runner sees is shipped (a few seconds apart)
    admin = create_user(lite_session, Role.admin)
    plan = {**TINY_TRAIN, "steps": 500, "checkpoint_every": 20, "ema_decay": 0.9}
    pi = create_user(lite_session)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi,
                                                        create_call(lite_session, admin, capacity=100),
                                                        job_plan=plan))
    cheater = volunteer_machine(lite_client, lite_session, "bogus")
    honest = [volunteer_machine(lite_client, lite_session, name) for name in ("den", "garage", "attic")]
    url = observatory()
    agents = [start_agent(url, cheater[1], tmp_path / "c", cheat="skip")]
    try:
        first_copy_taken(lite_session.get_bind(), run.id)
        agents += [start_agent(url, m[1], tmp_path / str(m[0])) for m in honest]
        wait_for(lite_session.get_bind(), [run.id], agents, timeout=420)
    finally:
        output = stop(agents)
    lite_session.expire_all()
    run = lite_session.get(Run, run.id)
    assert run.state == RunState.succeeded and "segments of its training re-run by other volunteers landed" \
        in run.message, run.message
    attempts = lite_session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)
                                 .order_by(RunAttempt.number)).all()
    trainings = [a for a in attempts if not a.segment_check]
    forged, trained = trainings[0], trainings[-1]
    assert forged.machine_id == cheater[0] and forged.verdict == "wrong", forged.message
    assert "proven wrong" in forged.message and "does not land" not in forged.message, forged.message
    assert trained.machine_id in {m[0] for m in honest} and trained.verdict == "agreed"
    assert trained.held_checkpoints and len(trained.segments) == 2, trained.held_checkpoints
    assert all(s["lands"] and s["off_share"] == 0.0 for s in trained.segments), trained.segments  # to the bit
    assert trained.segments[-1]["target"] == "checkpoint"
    assert run.resume_sha256 is None  # a volunteer's states are held to check it by, never a resume point
    for training in (forged, trained):  # each chosen segment re-run by two volunteers of other owners
        for index in range(len(training.segments)):
            checks = [a for a in attempts if a.segment_check.get("of") == training.number
                      and a.segment_check.get("segment") == index and a.verdict == "agreed"]
            if training is trained or "lands" in training.segments[index]:
                assert len(checks) == 2 and training.machine_id not in {a.machine_id for a in checks}
    assert any(s.get("lands") is False for s in forged.segments)
    # Published: the honest training's outputs alone; charged: its time alone.
    published = {a.name: a for a in list_artifacts(lite_session, run.id)}
    assert published["checkpoint.pt"].sha256 == trained.held_outputs["checkpoint.pt"]["sha256"]
    assert published["checkpoint.pt"].attempt == trained.number
    assert forged.number not in {a.attempt for a in published.values()}
    assert run_charged(lite_session, run.id, trained.number) > 0
    assert all(run_charged(lite_session, run.id, a.number) == 0 for a in attempts if a is not trained)
    machine = lite_session.get(Machine, cheater[0])
    # Zeroed when its training was proven wrong; grown since only by the honest checks it then ran for others.
    redeemed = [a for a in attempts if a.machine_id == cheater[0] and a.verdict == "agreed"]
    assert machine.wrong_results == 1 and machine.trust == len(redeemed)
    assert all(a.segment_check.get("of") == trained.number for a in redeemed)
    credited = set(lite_session.exec(select(VolunteerCredit.attempt).where(VolunteerCredit.run_id == run.id)))
    assert trained.number in credited and forged.number not in credited
    assert "re-running steps" in output, output[-2000:]  # what the volunteers read in their terminals
    # The team sees how the training was checked, segment by segment, and what each check re-ran.
    shown = {a["number"]: a["validation"] for a in lite_client.get(
        f"/api/runs/{run.id}", headers=auth_headers(lite_session, pi)).json()["attempts"]}
    assert shown[trained.number].startswith("checked by re-running: steps ") and "does not land" not in \
        shown[trained.number] and "does not land" in shown[forged.number], shown
    assert all(shown[a.number].startswith("re-runs steps ") for a in attempts if a.segment_check)
