"""Machines lent to the pool: roles, registration and decisions, owner controls, joining, what the scheduler makes
of each machine's state, GPU-class charge factors, and the public pool page."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from scheduler.placement import VramCache, read_facts
from service.config import Settings
from service.errors import Conflict, Forbidden, Invalid
from service.models import Machine, MachineState, PoolNode, Role, Run, RunAttempt, RunState
from service.pool import machines
from service.pool.standing import MACHINE_LABEL, labels_for
from service.runs.state import STOP_MOVE
from tests.factories import auth_headers, award, create_call, create_machine, create_proposal, create_user, start_review
from tests.pools import FakeJob, ScriptedPool, current_run


class OwnerPool(ScriptedPool):
    """The scripted head plus owners' machines as Ray would report them, each with its labels."""

    def __init__(self, machines_: list[Machine], gpus: float = 1, cpus: float = 8) -> None:
        super().__init__()
        self.machines = machines_
        self.gpus, self.cpus = gpus, cpus

    def nodes(self) -> list[dict]:
        return [{"node_id": "head-node", "is_head_node": True, "state": "ALIVE", "resources_total": {"CPU": 4}}] + [
            {"node_id": f"node-{m.id}", "is_head_node": False, "state": "ALIVE", "labels": labels_for(m),
             "resources_total": {"CPU": self.cpus, "GPU": self.gpus}} for m in self.machines]


@pytest.fixture
def people(lite_session: Session):
    return create_user(lite_session, Role.admin), create_user(lite_session)


def test_anyone_may_become_an_owner_but_no_one_makes_themselves_admin(lite_client: TestClient,
                                                                      lite_session: Session) -> None:
    user = create_user(lite_session)
    headers = auth_headers(lite_session, user)
    assert lite_client.post("/api/machines", json={"name": "box"}, headers=headers).status_code == 403
    for role in ("admin", "reviewer"):
        refused = lite_client.post("/api/me/roles", json={"role": role}, headers=headers)
        assert refused.status_code == 403 and "given by an admin" in refused.json()["detail"]
    taken = lite_client.post("/api/me/roles", json={"role": "owner"}, headers=headers)
    assert taken.json()["roles"] == ["owner", "researcher"]
    made = lite_client.post("/api/machines", json={"name": "box", "show_owner": True}, headers=headers)
    assert made.status_code == 201 and made.json()["state"] == "pending" and made.json()["status"] == "offline"


def test_decisions_follow_the_written_transitions(people, lite_session: Session) -> None:
    admin, owner = people
    machine, _ = create_machine(lite_session, owner)
    with pytest.raises(Invalid, match="say why"):
        machines.decide(lite_session, admin, machine.id, approve=False)
    with pytest.raises(Forbidden):
        machines.decide(lite_session, owner, machine.id, approve=True)
    with pytest.raises(Conflict, match="only an approved machine can be drained"):
        machines.set_controls(lite_session, owner, machine.id, draining=True)
    with pytest.raises(Conflict, match="once an admin approves it"):
        machines.issue_token(lite_session, owner, machine.id)
    machines.decide(lite_session, admin, machine.id, approve=True)
    assert machine.state == MachineState.approved and machine.decided_by == admin.id
    with pytest.raises(Conflict, match="cannot become rejected"):
        machines.decide(lite_session, admin, machine.id, approve=False, message="no")
    machines.revoke(lite_session, admin, machine.id, message="it ran a crypto miner")
    machines.decide(lite_session, admin, machine.id, approve=True)  # reinstated
    machines.leave(lite_session, owner, machine.id)
    with pytest.raises(Conflict):
        machines.decide(lite_session, admin, machine.id, approve=True)
    with pytest.raises(Conflict, match="register it again"):
        machines.set_controls(lite_session, owner, machine.id, paused=True)


def test_joining_takes_an_approved_machine_and_its_measurement(people, lite_client: TestClient,
                                                               lite_session: Session) -> None:
    admin, owner = people
    machine, _ = create_machine(lite_session, owner)
    measured = {"gpu_model": "NVIDIA GeForce RTX 3090", "gpu_count": 1, "vram_gb": 23.6, "cuda_capability": "8.6",
                "cpus": 16, "memory_gb": 62.7, "release": "0.2.0"}
    machines.decide(lite_session, admin, machine.id, approve=True)
    lite_session.commit()
    headers = auth_headers(lite_session, owner)
    ticket = lite_client.post(f"/api/machines/{machine.id}/join-token", headers=headers).json()
    assert ticket["command"] == f"OBSERVATORY_MACHINE_TOKEN={ticket['token']} observatory pool join " \
                                "http://127.0.0.1:8000"
    bearer = {"Authorization": f"Bearer {ticket['token']}"}
    grant = lite_client.post("/api/pool/join", json=measured, headers=bearer).json()
    assert grant["head_address"] == "head.pool.example:6379" and grant["num_gpus"] == 1
    assert grant["labels"] == {MACHINE_LABEL: str(machine.id), "observatory-gpu": "NVIDIA-GeForce-RTX-3090",
                               "observatory-gpus": "1", "observatory-vram-gb": "23.6", "observatory-cuda": "8.6",
                               "observatory-release": "0.2.0"}
    bad = lite_client.post("/api/pool/join", content=b'{"vram_gb": NaN, "release": "0.2.0"}',
                           headers={**bearer, "Content-Type": "application/json"})
    assert bad.status_code == 422 and "vram_gb" in bad.json()["detail"]
    # A new token replaces the old; a paused machine stays; a left one is told to leave and cannot join again.
    fresh = lite_client.post(f"/api/machines/{machine.id}/join-token", headers=headers).json()["token"]
    assert lite_client.post("/api/pool/orders", headers=bearer).status_code == 401
    bearer = {"Authorization": f"Bearer {fresh}"}
    lite_client.patch(f"/api/machines/{machine.id}", json={"paused": True}, headers=headers)
    orders = lite_client.post("/api/pool/orders", headers=bearer).json()
    assert orders["paused"] is True and orders["leave"] is False
    lite_client.post(f"/api/machines/{machine.id}/leave", headers=headers)
    assert lite_client.post("/api/pool/orders", headers=bearer).json()["leave"] is True
    refused = lite_client.post("/api/pool/join", json=measured, headers=bearer)
    assert refused.status_code == 403 and "is left" in refused.json()["detail"]


def test_a_drained_machine_leaves_once_its_run_ends(people, lite_engine, lite_session: Session, lite_settings,
                                                    lite_client: TestClient) -> None:
    from scheduler.loop import Scheduler

    admin, owner = people
    machine, token = create_machine(lite_session, owner, admin, cpus=4)
    settings = lite_settings.model_copy(update={"run_on_head": False})
    pool = OwnerPool([machine])
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    assert Scheduler(lite_engine, settings, pool).dispatch() == 1
    machines.set_controls(lite_session, owner, machine.id, draining=True)
    lite_session.commit()
    bearer = {"Authorization": f"Bearer {token}"}
    orders = lite_client.post("/api/pool/orders", headers=bearer).json()
    assert orders["leave"] is False and orders["busy"] is True  # its run goes on
    with Session(lite_engine) as session:
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)).one()
        attempt.state = "succeeded"
        session.add(attempt)
        session.commit()
    orders = lite_client.post("/api/pool/orders", headers=bearer).json()
    assert orders["leave"] is True and orders["state"] == "left" and orders["busy"] is False


def _facts(session: Session, settings: Settings, nodes: list[dict]):  # type: ignore[no-untyped-def]
    return {n.node_id: n.blocked for n in read_facts(session, settings, nodes, VramCache()).nodes}


@pytest.fixture
def noon(monkeypatch) -> datetime:
    """Today at noon (UTC), as the placement and the owners' limits see the time: a test that counts hours run
    "today" must not depend on how long ago midnight was."""
    import scheduler.placement
    import service.pool.machines
    from service.timeutil import utcnow

    fixed = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    for module in (scheduler.placement, service.pool.machines):
        monkeypatch.setattr(module, "utcnow", lambda: fixed)
    return fixed


def test_what_each_machine_state_means_for_placement(people, lite_session: Session, lite_settings, noon) -> None:
    admin, owner = people
    made = {name: create_machine(lite_session, owner, admin, name=name)[0]
            for name in ("open", "paused", "draining", "revoked", "capped")}
    machines.set_controls(lite_session, owner, made["paused"].id, paused=True)
    machines.set_controls(lite_session, owner, made["draining"].id, draining=True)
    machines.revoke(lite_session, admin, made["revoked"].id, message="gone quiet")
    machines.set_controls(lite_session, owner, made["capped"].id, hours_per_day=0.5)
    pending, _ = create_machine(lite_session, owner, name="pending")
    # The capped machine ran 50 minutes today.
    from datetime import timedelta

    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    lite_session.add(RunAttempt(run_id=run.id, number=1, pool="other", submission_id="s", token_hash="h",
                                state="succeeded", machine_id=made["capped"].id,
                                started_at=noon - timedelta(minutes=50), ended_at=noon))
    lite_session.commit()
    nodes = [{"node_id": "head", "is_head_node": True, "state": "ALIVE", "resources_total": {"CPU": 2}},
             {"node_id": "stranger", "is_head_node": False, "state": "ALIVE", "resources_total": {"CPU": 2}},
             {"node_id": "gone", "state": "DEAD", "labels": labels_for(made["open"])}]
    nodes += [{"node_id": name, "state": "ALIVE", "labels": labels_for(m), "resources_total": {"CPU": 2}}
              for name, m in {**made, "pending": pending}.items()]
    blocked = _facts(lite_session, lite_settings, nodes)
    assert blocked == {"head": None, "stranger": "not a registered machine", "open": None,
                       "paused": f"machine {made['paused'].id} is paused by its owner",
                       "draining": f"machine {made['draining'].id} is draining",
                       "revoked": f"machine {made['revoked'].id} is revoked",
                       "capped": f"machine {made['capped'].id} ran its 0.5 hours today",
                       "pending": f"machine {pending.id} is pending"}
    no_head = _facts(lite_session, lite_settings.model_copy(update={"run_on_head": False}), nodes)
    assert no_head["head"] == "the head takes no runs here"


def test_runs_are_pinned_to_their_node_and_charged_by_its_gpu_class(people, lite_engine, lite_session: Session,
                                                                     lite_settings) -> None:
    from scheduler.loop import Scheduler

    admin, owner = people
    old, _ = create_machine(lite_session, owner, admin, name="old", gpu_model="NVIDIA GeForce GTX 1080 Ti",
                            gpu_count=1, vram_gb=10.9, cuda_capability="6.1")
    settings = lite_settings.model_copy(update={
        "gpus_per_run": 1, "run_on_head": False,
        "charge_factors": {"RTX 3090": 1.0, "GTX 1080 Ti": 0.45, "GTX 1080": 0.4, "default": 0.8}})
    assert settings.charge_factor("NVIDIA GeForce GTX 1080 Ti") == 0.45  # the longest name found wins
    assert settings.charge_factor("Tesla T4") == 0.8 and settings.charge_factor(None) == 0.8
    pool = OwnerPool([old])
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    assert Scheduler(lite_engine, settings, pool).dispatch() == 1
    (request,) = pool.requests
    assert request.label_selector == {"ray.io/node-id": f"node-{old.id}"} and request.num_gpus == 1
    with Session(lite_engine) as session:
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)).one()
    assert (attempt.machine_id, attempt.node_id, attempt.charge_factor) == (old.id, f"node-{old.id}", 0.45)
    # A plan that needs more memory than the card has waits, saying why.
    big = {"kind": "train", "resolution": 64, "batch_size": 256, "block_out_channels": [128, 256, 256, 512]}
    _, waiting = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                            create_call(lite_session, admin), job_plan=big))
    assert Scheduler(lite_engine, settings, pool).dispatch() == 0
    assert current_run(lite_engine, waiting.id).message == "waiting: no node online has 34.5 GB of GPU memory"


def test_a_machine_that_reports_a_better_card_later_is_flagged_and_charged_as_the_cheaper(
        people, lite_engine, lite_session: Session, lite_settings) -> None:
    """The machine measures itself, so its owner could claim a dearer card after joining: the claim is flagged on
    its page and audited, and its runs are charged as the card it first joined with."""
    from scheduler.loop import Scheduler
    from service.models import AuditEntry
    from service.pool import machines
    from service.pool.schemas import Measurement

    admin, owner = people
    box, _ = create_machine(lite_session, owner, admin, name="box", gpu_model="NVIDIA GeForce GTX 1080 Ti",
                            gpu_count=1, vram_gb=10.9)
    machines.record_join(lite_session, box, Measurement(release="0.2.0", cpus=2, gpu_model="NVIDIA GeForce RTX 4090",
                                                        gpu_count=1, vram_gb=24.0))
    lite_session.commit()
    assert box.first_gpu_model == "NVIDIA GeForce GTX 1080 Ti" and "RTX 4090" in box.gpu_flag
    assert lite_session.exec(select(AuditEntry).where(AuditEntry.action == "machine.gpu_changed")).first()
    settings = lite_settings.model_copy(update={
        "gpus_per_run": 1, "run_on_head": False, "charge_factors": {"RTX 4090": 1.6, "GTX 1080 Ti": 0.45}})
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    assert Scheduler(lite_engine, settings, OwnerPool([box])).dispatch() == 1
    with Session(lite_engine) as session:
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)).one()
    assert attempt.charge_factor == 0.45


def test_a_job_token_never_travels_through_ray_and_works_only_from_its_machine(people, lite_engine,
                                                                              lite_session: Session, lite_settings,
                                                                              lite_client: TestClient) -> None:
    """Every pool member can read every job's environment from Ray: an attempt on an owner's machine carries no
    token there. Its runner claims one with the machine's own credential, and the token answers only beside that
    credential; another member's machine can neither claim it nor use it."""
    from scheduler.loop import Scheduler

    admin, owner = people
    mine, mine_token = create_machine(lite_session, owner, admin, name="mine", cpus=4)
    other, other_token = create_machine(lite_session, create_user(lite_session), admin, name="other", cpus=4)
    pool = OwnerPool([mine])
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    assert Scheduler(lite_engine, lite_settings.model_copy(update={"run_on_head": False}), pool).dispatch() == 1
    (request,) = pool.requests
    assert "OBSERVATORY_JOB_TOKEN" not in request.env and not any("att_" in v for v in request.env.values())
    submission = request.env["OBSERVATORY_JOB_SUBMISSION"]

    def claim(bearer: str | None):  # type: ignore[no-untyped-def]
        return lite_client.post("/api/job/claim", json={"submission_id": submission},
                                headers={"Authorization": f"Bearer {bearer}"} if bearer else {})

    assert claim(None).status_code == 401 and claim("mch_made-up").status_code == 401
    assert claim(other_token).status_code == 404  # not placed on that machine
    first = claim(mine_token).json()["token"]
    job = FakeJob.claimed(lite_client, pool, mine_token)  # claimed again: the first token is dead
    assert job.start().status_code == 200
    assert FakeJob(lite_client, first).start().status_code == 401
    bare = FakeJob(lite_client, job.headers["Authorization"][7:])
    assert bare.start().status_code == 401  # without the machine's credential
    bare.headers["X-Machine-Token"] = other_token
    refused = bare.start()
    assert refused.status_code == 401 and "only from the machine it was placed on" in refused.json()["detail"]


def test_a_revoked_machine_moves_its_run_which_resumes_elsewhere(people, lite_engine, lite_session: Session,
                                                                 lite_settings, lite_client: TestClient) -> None:
    from scheduler.loop import Scheduler
    from scheduler.ray_backend import JobState

    admin, owner = people
    machine, machine_token = create_machine(lite_session, owner, admin, cpus=4)
    pool = OwnerPool([machine])
    settings = lite_settings.model_copy(update={"run_on_head": False})
    scheduler = Scheduler(lite_engine, settings, pool)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    assert scheduler.dispatch() == 1
    job = FakeJob.claimed(lite_client, pool, machine_token)
    job.start()
    assert job.checkpoint(b"state at 50", step=50).status_code == 200
    machines.revoke(lite_session, admin, machine.id, message="unreliable")
    lite_session.commit()
    assert current_run(lite_engine, run.id).stop_reason == STOP_MOVE
    assert job.log("step 60\n")["stop"] == STOP_MOVE  # the job is told to save and stop
    job.end(exit_code=0, stopped=True)
    pool.set(pool.submitted[-1], JobState.succeeded, node_id=f"node-{machine.id}")
    scheduler.reconcile()
    moved = current_run(lite_engine, run.id)
    assert moved.state == RunState.queued and moved.stop_reason is None and moved.retries_used == 0
    assert moved.resume_step == 50 and "moved off its machine" in moved.message
    assert scheduler.dispatch() == 0  # the revoked machine gets nothing; the head takes no runs here
    scheduler.settings = lite_settings  # the head does take runs
    assert scheduler.dispatch() == 1
    assert pool.requests[-1].label_selector == {"ray.io/node-id": "head-node"}


def test_the_public_pool_page_shows_only_what_owners_chose(people, lite_client: TestClient,
                                                          lite_session: Session) -> None:
    admin, shy = people
    proud = create_user(lite_session)
    for owner, show in ((shy, False), (proud, True)):
        machine, _ = create_machine(lite_session, owner, admin, show_owner=show, gpu_model="NVIDIA RTX A4000",
                                    gpu_count=1, vram_gb=16)
        lite_session.add(PoolNode(node_id=f"n{machine.id}", address="10.8.0.7", alive=True,
                                  resources={"CPU": 8, "GPU": 1}, labels=labels_for(machine)))
    lite_session.commit()
    figures = lite_client.get("/api/pool").json()
    assert figures["machines_online"] == 2 and figures["gpus_online"] == 2 and figures["vram_gb_online"] == 32
    assert figures["named_owners"] == [proud.name]
    page = lite_client.get("/pool").text
    for shown in (figures, page):
        text = str(shown)
        assert proud.name in text and shy.name not in text and shy.email not in text and proud.email not in text
        assert "10.8.0.7" not in text and "attic box" not in text  # no addresses, no machine names


def test_unregistered_and_blocked_nodes_leave_the_queue_waiting(people, lite_engine, lite_session: Session,
                                                                lite_settings) -> None:
    from scheduler.loop import Scheduler

    admin, _ = people
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    settings = lite_settings.model_copy(update={"run_on_head": False})
    assert Scheduler(lite_engine, settings, ScriptedPool()).dispatch() == 0
    waiting = current_run(lite_engine, run.id)
    assert waiting.state == RunState.queued and waiting.claim_token is None
    assert waiting.message == "waiting: no node that takes work is online"
    with Session(lite_engine) as session:
        assert session.exec(select(Run).where(Run.state == RunState.running)).all() == []


def test_an_award_in_class_a_is_placed_before_an_older_one_in_class_c(people, lite_engine, lite_session: Session,
                                                                      lite_settings, lite_client: TestClient) -> None:
    from scheduler.loop import Scheduler

    admin, _ = people
    call = create_call(lite_session, admin)
    older, newer = (create_proposal(lite_session, create_user(lite_session), call) for _ in range(2))
    start_review(lite_session, admin, call)
    headers = auth_headers(lite_session, admin)
    for proposal, priority in ((older, "C"), (newer, "A")):
        made = lite_client.post(f"/api/proposals/{proposal.id}/award", headers=headers,
                                json={"gpu_hours": 1, "priority": priority})
        assert made.status_code == 201 and made.json()["award"]["priority"] == priority
    bad = lite_client.post(f"/api/proposals/{older.id}/award", headers=headers, json={"gpu_hours": 1, "priority": "Z"})
    assert bad.status_code == 422

    class OneSlot(ScriptedPool):
        def nodes(self) -> list[dict]:
            return [{"node_id": "head-node", "is_head_node": True, "state": "ALIVE", "resources_total": {"CPU": 1}}]

    assert Scheduler(lite_engine, lite_settings, OneSlot()).dispatch() == 1
    with Session(lite_engine) as session:
        states = {r.proposal_id: r.state for r in session.exec(select(Run))}
    assert states == {newer.id: RunState.running, older.id: RunState.queued}


def test_the_daily_cap_moves_a_run_and_a_drained_machine_leaves_unattended(people, lite_engine,
                                                                           lite_session: Session,
                                                                           lite_settings, noon) -> None:
    from datetime import timedelta

    from scheduler.loop import Scheduler

    admin, owner = people
    capped, _ = create_machine(lite_session, owner, admin, name="capped", cpus=4)
    drained, _ = create_machine(lite_session, owner, admin, name="drained", cpus=4)
    settings = lite_settings.model_copy(update={"run_on_head": False})
    scheduler = Scheduler(lite_engine, settings, OwnerPool([capped]))
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    assert scheduler.dispatch() == 1
    with Session(lite_engine) as session:  # it has been running for 90 minutes today
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)).one()
        attempt.started_at = noon - timedelta(minutes=90)
        session.add(attempt)
        session.commit()
    machines.set_controls(lite_session, owner, capped.id, hours_per_day=24)
    machines.set_controls(lite_session, owner, drained.id, draining=True)
    lite_session.commit()
    assert scheduler.enforce_owner_limits() == 1  # the drained one leaves; 24 hours are far off
    assert current_run(lite_engine, run.id).stop_reason is None
    machines.set_controls(lite_session, owner, capped.id, hours_per_day=0.01)
    lite_session.commit()
    assert scheduler.enforce_owner_limits() == 1
    moved = current_run(lite_engine, run.id)
    assert moved.stop_reason == STOP_MOVE and "cap of 0.01 hours a day" in moved.message
    with Session(lite_engine) as session:
        assert session.get(Machine, drained.id).state == MachineState.left
        assert session.get(Machine, capped.id).state == MachineState.approved


def test_a_1080_ti_attempt_is_charged_on_the_ledger_at_its_class_factor(people, lite_engine, lite_session: Session,
                                                                         lite_settings, lite_client) -> None:
    """Through a real attempt: placed on a GTX 1080 Ti, its job starts, runs about four seconds and ends; the award
    is debited its whole seconds times 0.45, not one GPU-second per second."""
    import math
    import time

    from scheduler.accounting import work_ended_at
    from scheduler.loop import Scheduler
    from scheduler.ray_backend import JobState
    from service.ledger.service import award_used, entries_for_run, run_charged
    from tests.pools import TRAIN_FILES

    admin, owner = people
    old, token = create_machine(lite_session, owner, admin, name="old", gpu_model="NVIDIA GeForce GTX 1080 Ti",
                                gpu_count=1, vram_gb=10.9)
    settings = lite_settings.model_copy(update={"gpus_per_run": 1, "run_on_head": False,
                                                "charge_factors": {"GTX 1080 Ti": 0.45, "default": 1.0}})
    pool = OwnerPool([old])
    granted, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                              create_call(lite_session, admin)))
    scheduler = Scheduler(lite_engine, settings, pool)
    assert scheduler.dispatch() == 1
    job = FakeJob.claimed(lite_client, pool, token)
    assert job.start().status_code == 200
    time.sleep(4.2)
    job.outputs(TRAIN_FILES)
    assert job.end(exit_code=0).status_code == 204
    pool.set(pool.submitted[-1], JobState.succeeded)
    scheduler.reconcile()
    with Session(lite_engine) as session:
        attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)).one()
        assert attempt.state == "succeeded" and attempt.charge_factor == 0.45
        seconds = math.floor((work_ended_at(attempt, attempt.ended_at) - attempt.started_at).total_seconds())
        charged = run_charged(session, run.id)
        assert seconds >= 4 and charged == round(seconds * 0.45), (seconds, charged)
        assert award_used(session, granted.id) == charged < seconds  # what a GPU-second-per-second would have been
        assert all(e.run_id == run.id for e in entries_for_run(session, run.id))
