"""Stand-ins for Ray in scheduler tests, and a job that talks to the observatory as the runner on a node would."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.testclient import TestClient

from jobs.kinds import job_kind
from scheduler.ray_backend import JobRequest, JobSnapshot, JobState
from service.timeutil import utcnow


class ScriptedPool:
    """Ray as a script: each submitted job is pending until the test says otherwise."""

    dashboard_url = "http://scripted-pool"

    def __init__(self, head: str = "head-node") -> None:
        self.head = head
        self.snapshots: dict[str, JobSnapshot] = {}
        self.requests: list[JobRequest] = []
        self.log = ""
        self.stopped: list[str] = []
        self.dead_nodes: set[str] = set()

    @property
    def submitted(self) -> list[str]:
        return [r.submission_id for r in self.requests]

    def submit(self, request: JobRequest) -> str:
        self.requests.append(request)
        self.snapshots.setdefault(request.submission_id, JobSnapshot(JobState.pending))
        return request.submission_id

    def snapshot(self, submission_id: str) -> JobSnapshot:
        return self.snapshots.get(submission_id, JobSnapshot(JobState.unknown))

    def set(self, submission_id: str, state: JobState, **kwargs: Any) -> None:
        if state not in (JobState.pending, JobState.running):
            kwargs.setdefault("ended_at", utcnow())
        kwargs.setdefault("node_id", "worker-node")
        self.snapshots[submission_id] = JobSnapshot(state, **kwargs)

    def logs(self, submission_id: str) -> str:
        return self.log

    def stop(self, submission_id: str) -> None:
        self.stopped.append(submission_id)

    def nodes(self) -> list[dict[str, Any]]:
        return [{"node_id": self.head, "is_head_node": True, "state": "ALIVE", "resources_total": {"CPU": 64}},
                {"node_id": "worker-node", "is_head_node": False, "resources_total": {"CPU": 64},
                 "state": "DEAD" if "worker-node" in self.dead_nodes else "ALIVE"}]

    def head_node_id(self) -> str:
        return self.head

    def token(self, index: int = -1) -> str:
        return self.requests[index].env["OBSERVATORY_JOB_TOKEN"]


class FakeJob:
    """The runner's side of the job channel, driven by hand through the app's test client."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.offset = 0

    @classmethod
    def claimed(cls, client: TestClient, pool: ScriptedPool, machine_token: str, index: int = -1) -> FakeJob:
        """The job of an attempt placed on an owner's machine: its token claimed with the machine's credential,
        which every call then shows beside it, as the runner there does."""
        submission = pool.requests[index].env["OBSERVATORY_JOB_SUBMISSION"]
        answer = client.post("/api/job/claim", json={"submission_id": submission},
                             headers={"Authorization": f"Bearer {machine_token}"})
        assert answer.status_code == 200, answer.text
        job = cls(client, answer.json()["token"])
        job.headers["X-Machine-Token"] = machine_token
        return job

    def start(self, version: str | None = None) -> Any:
        from jobs.version import installed_version

        return self.client.post("/api/job/start", headers=self.headers,
                                json={"node_name": "owner-box", "worker_version": version or installed_version()})

    def log(self, text: str, progress: dict | None = None) -> dict:
        response = self.client.post("/api/job/log", headers=self.headers,
                                    json={"offset": self.offset, "text": text, "progress": progress})
        assert response.status_code == 200, response.text
        self.offset = response.json()["offset"]
        return response.json()

    def checkpoint(self, data: bytes, step: int) -> Any:
        return self.client.put("/api/job/checkpoint", params={"step": step}, content=data,
                               headers={**self.headers, "X-Content-SHA256": hashlib.sha256(data).hexdigest()})

    def output(self, name: str, data: bytes, sha256: str | None = None) -> Any:
        return self.client.put(f"/api/job/outputs/{name}", content=data,
                               headers={**self.headers, "X-Content-SHA256": sha256 or hashlib.sha256(data).hexdigest()})

    def outputs(self, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            response = self.output(name, data)
            assert response.status_code == 201, response.text

    def end(self, exit_code: int = 0, stopped: bool = False, problems: list[str] | None = None) -> Any:
        return self.client.post("/api/job/end", headers=self.headers,
                                json={"exit_code": exit_code, "stopped": stopped, "problems": problems or []})


TRAIN_FILES = {"checkpoint.pt": b"weights", "samples.png": b"\x89PNG\r\n\x1a\nsamples",
               "training_images.png": b"\x89PNG\r\n\x1a\ntraining", "metrics.json": b"{}", "attribution.json": b"{}"}
assert set(TRAIN_FILES) == {s.name for s in job_kind("train").outputs}


def dispatched_run(engine, session, settings):  # type: ignore[no-untyped-def]
    """An awarded run, dispatched to a scripted pool: (its scheduler, the pool, the run's id, its PI)."""
    from scheduler.loop import Scheduler
    from service.models import Role
    from tests.factories import award, create_call, create_proposal, create_user

    admin, pi = create_user(session, Role.admin), create_user(session)
    _, run = award(session, admin, create_proposal(session, pi, create_call(session, admin)))
    pool = ScriptedPool()
    scheduler = Scheduler(engine, settings, pool)
    assert scheduler.dispatch() == 1
    return scheduler, pool, run.id, pi


def current_run(engine, run_id: int):  # type: ignore[no-untyped-def]
    """The run as the database has it now."""
    from sqlmodel import Session

    from service.models import Run

    with Session(engine) as session:
        return session.get(Run, run_id)


def tick_until(scheduler, engine, run_id: int, done, timeout: float = 240):  # type: ignore[no-untyped-def]
    """Tick the scheduler until `done(session, run)` holds for the run; returns the run."""
    import time

    from sqlmodel import Session

    from service.models import Run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scheduler.tick()
        with Session(engine) as session:
            run = session.get(Run, run_id)
            if done(session, run):
                return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never got there: {run.state} {run.message}")


# Ray's health checks at test speed: a node that stops answering is dead within about three seconds.
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
               "RAY_health_check_failure_threshold": "3"}


def join_owners_machine(stack, session, head, backend, *, owner, admin, base_port: int,  # type: ignore[no-untyped-def]
                        folder):
    """An approved machine of `owner`'s joined to the head as `observatory pool join` joins it (its labels, its
    credential in its node folder), stopped with `stack`; returns the machine, its worker and the worker's Ray
    node id, once the head sees it alive."""
    import time

    from scheduler.local_ray import join_worker
    from service.pool.standing import labels_for
    from tests.factories import create_machine

    alive_before = {n["node_id"] for n in backend.nodes() if n["state"] == "ALIVE"}
    machine, machine_token = create_machine(session, owner, admin, cpus=1)
    worker = join_worker(head_address=head.gcs_address, base_port=base_port, temp_dir=folder / "w", token=head.token,
                         num_cpus=1, node_dir=folder / "worker-node", labels=labels_for(machine),
                         machine_token=machine_token)
    stack.callback(worker.stop)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        joined = [n["node_id"] for n in backend.nodes() if n["state"] == "ALIVE" and n["node_id"] not in alive_before]
        if joined:
            return machine, worker, joined[0]
        time.sleep(0.3)
    raise AssertionError(f"the owner's machine did not join the head; see {folder / 'w'}")
