"""The pool on hosts of its own: the service, the Ray head and two owners' machines each in a network namespace with
its own address and folders, the archive behind the service on a link of its own, and Ray's traffic in TLS with
certificates made here. Every part runs as it is deployed: `observatory serve` (the API and the scheduler, driving
a Ray head it did not start), `ray start --head`, and `observatory pool join` on each owner's machine.

On it: a run crosses hosts and its files reach the archive through the service alone; a node whose link is cut
mid-run is lost, its run resumes on the other machine, and it joins again when its link is back; Ray refuses a
certificate of another authority (from a fifth host, a stranger's); and a revoked machine reaches nothing with its
old credentials once the pool's token is rotated, while the others follow the rotation by themselves."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from scheduler.local_ray import RayNode, ray_env, ray_ports
from service.archive.service import list_artifacts, read_object, store_for
from service.attempts.service import attempts_of
from service.config import Settings
from service.db import make_engine, writer
from service.ledger.service import run_charged
from service.models import AttemptState, Machine, Role, Run, RunState, User
from service.pool import machines
from tests import netns
from tests.certs import Authority
from tests.factories import TINY_TRAIN, award, create_call, create_machine, create_proposal, create_user
from tests.pools import FAST_HEALTH
from tests.s3 import CREDENTIALS

pytestmark = pytest.mark.ray

# Every host has its own ports: these are the same on each, and collide with nothing on this machine.
GCS, DASHBOARD, PORTAL, S3, WORKER_PORTS = 6380, 8265, 8000, 9000, 7000
LONG = {**TINY_TRAIN, "steps": 900, "checkpoint_every": 50, "batch_size": 16, "sample_inference_steps": 4}
BIN = Path(sys.executable).parent


def _ended(run: Run) -> bool:
    return run.state in (RunState.succeeded, RunState.failed, RunState.cancelled)


@dataclass
class Pool:
    """The hosts, the processes on them, and the observatory's database as the test reaches it."""

    hosts: dict[str, netns.Host]
    root: Path
    engine: Engine
    authority: Authority
    token: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    head: RayNode | None = None
    people: dict[str, User] = field(default_factory=dict)
    temps: list[str] = field(default_factory=list)
    machines: dict[str, tuple[Machine, str]] = field(default_factory=dict)

    @property
    def portal(self) -> str:
        return f"http://{self.hosts['svc'].address}:{PORTAL}"

    @property
    def archive_url(self) -> str:
        return f"http://{self.hosts['archive'].address}:{S3}"

    def settings(self) -> Settings:
        """The service's settings, as its environment gives them."""
        return Settings(var_dir=self.root / "svc", database_url=f"sqlite:///{self.root / 'observatory.db'}",
                        secret_key="hosts-test", archive_store="s3", s3_bucket="archive",
                        s3_endpoint_url=self.archive_url, **CREDENTIALS)

    def temp(self, prefix: str) -> str:
        """A short folder under /tmp (Ray's socket paths must stay short), removed with the pool."""
        self.temps.append(tempfile.mkdtemp(prefix=f"obs-{prefix}-", dir="/tmp"))
        return self.temps[-1]

    def start_head(self) -> None:
        host = self.hosts["head"]
        args = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", "--head",
                "--node-ip-address", host.address, "--temp-dir", self.temp("head"),
                "--include-dashboard", "true", "--dashboard-host", "0.0.0.0", "--dashboard-port", str(DASHBOARD),
                "--num-cpus", "1", *[f"--{k}={v}" for k, v in ray_ports(GCS).items()]]
        env = {**ray_env(self.token), **FAST_HEALTH, **self.authority.issue("head", [host.address])}
        process = host.popen(args, self.root / "head.log", env=env)
        self.head = RayNode(process, self.root, self.root / "head.log", f"{host.address}:{GCS}",
                            f"http://{host.address}:{DASHBOARD}", self.token)
        netns.wait_for(lambda: self.ray_nodes(), 120, "the Ray head answers")

    def start_service(self) -> None:
        settings = self.settings()
        env = {**os.environ, **{f"OBSERVATORY_{k.upper()}": str(v) for k, v in {
            "var_dir": settings.var_dir, "database_url": settings.database_url, "secret_key": "hosts-test",
            "base_url": self.portal, "ray_address": self.head.dashboard_url, "ray_auth_token": self.token,
            "pool_join_address": self.head.gcs_address, "run_on_head": "false", "job_python": sys.executable,
            "checkpoint_ship_interval_s": "0.5", "scheduler_interval_s": "1", "archive_store": "s3",
            "s3_bucket": "archive", "s3_endpoint_url": self.archive_url, "s3_signed_links": "false",
            **CREDENTIALS}.items()}}
        self.processes["svc"] = self.hosts["svc"].popen(
            [str(BIN / "observatory"), "serve", "--host", self.hosts["svc"].address, "--port", str(PORTAL)],
            self.root / "svc.log", env=env)
        netns.wait_for(lambda: self.hosts["svc"].call(self._answers), 120, "the portal answers")

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.portal}/api/calls", timeout=3).status_code < 500
        except httpx.HTTPError:
            return False

    def stop(self, name: str) -> int | None:
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        return process.returncode

    def join(self, name: str) -> None:
        """`observatory pool join` on the machine, as its owner runs it (with the pool's TLS certificate)."""
        host, (_, token) = self.hosts[name], self.machines[name]
        temp = self.temp(name)
        env = {**os.environ, "OBSERVATORY_MACHINE_TOKEN": token, "TMPDIR": temp, "PYTHONUNBUFFERED": "1",
               **self.authority.issue(name, [host.address])}
        self.processes[name] = host.popen(
            [str(BIN / "observatory"), "pool", "join", self.portal, "--node-ip", host.address, "--port-base",
             str(WORKER_PORTS), "--node-dir", str(self.root / name), "--poll-s", "1"], self.root / f"{name}.log",
            env=env)

    def ray_nodes(self) -> list[dict[str, Any]]:
        """The head's view of the pool (from the head's own host); empty while it does not answer."""
        def ask() -> list[dict[str, Any]]:
            try:
                answer = httpx.get(f"{self.head.dashboard_url}/api/v0/nodes", params={"detail": 1}, timeout=5,
                                   headers={"Authorization": f"Bearer {self.token}"})
                return answer.json()["data"]["result"]["result"] if answer.status_code == 200 else []
            except (httpx.HTTPError, ValueError, KeyError):
                return []

        return self.hosts["head"].call(ask)

    def alive(self) -> set[str]:
        return {n["node_ip"] for n in self.ray_nodes() if n["state"] == "ALIVE"}

    def node_ip(self, node_id: str | None) -> str | None:
        return next((n["node_ip"] for n in self.ray_nodes() if n["node_id"] == node_id), None)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def writing(self) -> Session:
        """A session that reads and then writes, begun as the portal's writers begin theirs (BEGIN IMMEDIATE on
        SQLite): the service writes to the same file, and a transaction that read first could not then write."""
        return Session(writer(self.engine), expire_on_commit=False)

    def awarded(self, plan: dict[str, Any]) -> int:
        with self.session() as session:
            admin, pi = session.get(User, self.people["admin"].id), session.get(User, self.people["pi"].id)
            call = create_call(session, admin)
            _, run = award(session, admin, create_proposal(session, pi, call, job_plan=plan))
            return run.id

    def run(self, run_id: int) -> Run:
        with self.session() as session:
            return session.get(Run, run_id)

    def wait_run(self, run_id: int, done, timeout: float = 300) -> Run:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if done(run):
                return run
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} never got there: {run.state} {run.message}")

    def pause(self, name: str, paused: bool) -> None:
        with self.writing() as session:
            machines.set_controls(session, session.get(User, self.people["owner"].id), self.machines[name][0].id,
                                  paused=paused)
            session.commit()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    why_not = netns.available()
    if why_not is not None:
        (pytest.fail if os.environ.get("OBSERVATORY_REQUIRE_NETNS") else pytest.skip)(why_not)
    root = tmp_path_factory.mktemp("hosts")
    root.chmod(0o700)
    with ExitStack() as stack:
        hosts = stack.enter_context(netns.lan(["svc", "head", "m1", "m2", "x"], behind={"archive": "svc"}))
        pool = Pool(hosts, root, make_engine(f"sqlite:///{root / 'observatory.db'}"),
                    Authority.create(root / "ca"), secrets.token_hex(16))
        stack.callback(lambda: [shutil.rmtree(temp, ignore_errors=True) for temp in pool.temps])
        stack.callback(pool.engine.dispose)  # leaving the hosts has killed every process in them
        # The archive: an S3 server on a host that only the service's host has a link to.
        pool.processes["archive"] = hosts["archive"].popen(
            [str(BIN / "moto_server"), "-H", hosts["archive"].address, "-p", str(S3)], root / "archive.log")
        netns.wait_for(lambda: hosts["svc"].reaches(hosts["archive"].address, S3), 60, "the archive answers")
        hosts["svc"].call(lambda: store_for(pool.settings()).client.create_bucket(Bucket="archive"))
        pool.start_head()
        pool.start_service()
        with pool.session() as session:
            admin, pi, owner = create_user(session, Role.admin), create_user(session), create_user(session)
            pool.people = {"admin": admin, "pi": pi, "owner": owner}
            for name in ("m1", "m2"):
                pool.machines[name] = create_machine(session, owner, admin, name=f"{name} box", cpus=1)
        for name in ("m1", "m2"):
            pool.join(name)
        expected = {hosts[name].address for name in ("head", "m1", "m2")}
        netns.wait_for(lambda: pool.alive() == expected, 180, "both machines join the head")
        yield pool


def test_a_run_crosses_hosts_and_its_files_reach_the_archive_through_the_service_alone(pool: Pool) -> None:
    hosts = pool.hosts
    # Each node reports the address of its own host, not another interface's.
    assert {n["node_ip"] for n in pool.ray_nodes()} == {hosts[n].address for n in ("head", "m1", "m2")}
    # Only the service's host reaches the archive; the pool's hosts have no way to it at all.
    assert hosts["svc"].reaches(hosts["archive"].address, S3)
    for name in ("head", "m1", "m2"):
        assert not hosts[name].reaches(hosts["archive"].address, S3, timeout=2), name
        assert hosts[name].reaches(hosts["svc"].address, PORTAL), name

    run_id = pool.awarded(TINY_TRAIN)
    run = pool.wait_run(run_id, _ended)
    assert run.state == RunState.succeeded, run.message
    with pool.session() as session:
        (attempt,) = attempts_of(session, run_id)
        artifacts = list_artifacts(session, run_id)
    assert pool.node_ip(attempt.node_id) in {hosts["m1"].address, hosts["m2"].address}
    assert attempt.machine_id in {m.id for m, _ in pool.machines.values()}
    store = store_for(pool.settings())
    for artifact in artifacts:  # every file is in the bucket, whole, read from the service's host
        data = hosts["svc"].call(read_object, store, artifact.sha256)
        assert hashlib.sha256(data).hexdigest() == artifact.sha256
    # What Ray hands the job names neither the archive nor any secret of the service.
    info = hosts["head"].call(lambda: httpx.get(f"{pool.head.dashboard_url}/api/jobs/{attempt.submission_id}",
                                                headers={"Authorization": f"Bearer {pool.token}"}).text)
    assert attempt.submission_id in info
    for secret in (CREDENTIALS["s3_secret_access_key"], pool.archive_url, "hosts-test"):
        assert secret not in info


def test_a_node_cut_off_mid_run_is_lost_its_run_resumes_on_the_other_and_it_joins_again(pool: Pool) -> None:
    hosts = pool.hosts
    m1, m2 = pool.machines["m1"][0], pool.machines["m2"][0]
    pool.pause("m2", True)
    run_id = pool.awarded(LONG)
    pool.wait_run(run_id, lambda run: run.resume_step >= 100 or _ended(run))
    pool.pause("m2", False)
    with pool.session() as session:
        (first,) = attempts_of(session, run_id)
    assert first.machine_id == m1.id and first.state == AttemptState.running
    hosts["m1"].cut()
    try:
        # Ray's health checks find the node gone; the run goes on from its checkpoint on the other machine.
        pool.wait_run(run_id, lambda run: run.attempt >= 2 or _ended(run), timeout=120)
        assert hosts["m1"].address not in pool.alive()
    finally:
        hosts["m1"].restore()
    run = pool.wait_run(run_id, _ended)
    assert run.state == RunState.succeeded, run.message
    with pool.session() as session:
        first, second, *more = attempts_of(session, run_id)
        charged = run_charged(session, run_id, 1)
        artifacts = {a.name: a for a in list_artifacts(session, run_id)}
    assert more == [] and first.state == AttemptState.lost and second.state == AttemptState.succeeded
    assert second.machine_id == m2.id and second.resume_step == first.checkpoint_step >= 100
    assert charged == int((first.checkpoint_at - first.started_at).total_seconds())
    log = hosts["svc"].call(read_object, store_for(pool.settings()), artifacts["attempt-2.log"].sha256).decode()
    assert f"resumed from step {second.resume_step}" in log
    # With its link back, the machine's join command brings it into the pool again, as a new node.
    netns.wait_for(lambda: hosts["m1"].address in pool.alive(), 180, "m1 joins again")
    assert pool.processes["m1"].poll() is None
    assert "joining again" in (pool.root / "m1.log").read_text()


def _speaks_with(host: netns.Host, address: str, ca: Path, tls: dict[str, str] | None) -> str | None:
    """Open HTTP/2 over TLS to Ray's GCS from `host`, showing `tls`'s certificate (None: none): the subject of the
    server's certificate when the server answers, None when it hangs up (TLS 1.3 hears a refused client
    certificate only after the handshake, so the connection is read from to learn of it)."""
    def speak() -> str | None:
        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = False
        if tls:
            context.load_cert_chain(tls["RAY_TLS_SERVER_CERT"], tls["RAY_TLS_SERVER_KEY"])
        context.set_alpn_protocols(["h2"])
        try:
            with socket.create_connection((address, GCS), timeout=10) as raw, context.wrap_socket(raw) as sock:
                subject = dict(x[0] for x in sock.getpeercert()["subject"])["commonName"]
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
                sock.settimeout(5)
                answer = sock.recv(64)
        except (ssl.SSLError, ConnectionError):
            return None
        return subject if answer[3:4] == b"\x04" else None  # the server's SETTINGS frame

    return host.call(speak)


def test_ray_speaks_tls_only_with_members_of_the_pools_authority(pool: Pool, tmp_path: Path) -> None:
    host, head = pool.hosts["m1"], pool.hosts["head"].address
    member = pool.authority.issue("probe", [host.address])
    assert _speaks_with(host, head, pool.authority.ca_cert, member) == "head"
    stranger = Authority.create(tmp_path / "other").issue("stranger", [host.address])
    assert _speaks_with(host, head, pool.authority.ca_cert, stranger) is None
    assert _speaks_with(host, head, pool.authority.ca_cert, None) is None
    # A node with a certificate of another authority cannot join, though it holds the pool's token.
    stranger_host = pool.hosts["x"]
    temp = pool.temp("stranger")
    stranger_tls = Authority.create(tmp_path / "elsewhere").issue("x", [stranger_host.address])
    process = stranger_host.popen(
        [str(BIN / "ray"), "start", "--block", "--address", pool.head.gcs_address, "--node-ip-address",
         stranger_host.address, "--num-cpus", "1", "--temp-dir", temp,
         *[f"--{k}={v}" for k, v in ray_ports(WORKER_PORTS).items() if k not in ("port", "ray-client-server-port")]],
        tmp_path / "stranger.log", env={**ray_env(pool.token), **stranger_tls})
    node = RayNode(process, Path(temp), tmp_path / "stranger.log", pool.head.gcs_address)
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and process.poll() is None:
            assert stranger_host.address not in {n["node_ip"] for n in pool.ray_nodes()}
            time.sleep(1)
    finally:
        node.kill()
    assert pool.alive() == {pool.hosts[n].address for n in ("head", "m1", "m2")}


def test_a_revoked_machine_reaches_nothing_with_its_old_credentials(pool: Pool) -> None:
    hosts = pool.hosts
    (m1, m1_token), (m2, _) = pool.machines["m1"], pool.machines["m2"]
    netns.wait_for(lambda: hosts["m1"].address in pool.alive(), 180, "m1 is in the pool")
    pool.pause("m2", True)
    run_id = pool.awarded(LONG)
    pool.wait_run(run_id, lambda run: run.resume_step >= 100 or _ended(run))
    with pool.writing() as session:
        (attempt,) = attempts_of(session, run_id)
        machines.revoke(session, session.get(User, pool.people["admin"].id), m1.id, message="no longer trusted")
        session.commit()
    assert attempt.machine_id == m1.id
    # Its run checkpoints and goes back to the queue; its join command leaves.
    run = pool.wait_run(run_id, lambda run: run.state == RunState.queued, timeout=120)
    assert run.resume_step >= 100
    assert netns.wait_for(lambda: pool.processes["m1"].poll() is not None, 90, "m1's join command leaves") is True
    assert pool.stop("m1") == 0

    # The operator rotates the pool's token: the head and the service start again with the new one.
    old = pool.token
    pool.token = secrets.token_hex(16)
    pool.stop("svc")
    pool.head.stop()
    pool.start_head()
    pool.start_service()

    # The revoked machine, with everything it held: the portal refuses its credential, and Ray its old token.
    def portal(path: str, body: dict) -> int:
        return httpx.post(f"{pool.portal}/api{path}", json=body, timeout=10,
                          headers={"Authorization": f"Bearer {m1_token}"}).status_code

    assert hosts["m1"].call(portal, "/pool/join", {"release": "0.2.0", "cpus": 1}) == 403
    assert hosts["m1"].call(portal, "/job/claim", {"submission_id": attempt.submission_id}) == 403
    dashboard = hosts["m1"].call(lambda: httpx.get(f"{pool.head.dashboard_url}/api/jobs/", timeout=10,
                                                   headers={"Authorization": f"Bearer {old}"}).status_code)
    assert dashboard in (401, 403)
    temp = pool.temp("revoked")
    ports = {k: v for k, v in ray_ports(WORKER_PORTS).items() if k not in ("port", "ray-client-server-port")}
    rejoined = hosts["m1"].run(
        [str(BIN / "ray"), "start", "--address", pool.head.gcs_address, "--node-ip-address", hosts["m1"].address,
         "--num-cpus", "1", "--temp-dir", temp, *[f"--{k}={v}" for k, v in ports.items()]],
        env={**ray_env(old), **pool.authority.issue("m1-again", [hosts["m1"].address])}, timeout=300)
    assert rejoined.returncode != 0
    assert "auth" in (rejoined.stdout + rejoined.stderr).lower(), rejoined.stderr[-2000:]

    # The approved machine follows the rotation by itself, and the run resumes on it.
    pool.pause("m2", False)
    netns.wait_for(lambda: pool.alive() == {hosts["head"].address, hosts["m2"].address}, 180,
                   "m2 joins the restarted head with the new token")
    run = pool.wait_run(run_id, _ended)
    assert run.state == RunState.succeeded, run.message
    with pool.session() as session:
        first, second = attempts_of(session, run_id)
    assert first.state == AttemptState.stopped and second.machine_id == m2.id
    assert second.resume_step == first.checkpoint_step
    # It joined again by itself: on the rotated token its orders showed, or, when its worker dropped out with the
    # old head before the restarted portal answered, on the new grant it asked for.
    said = (pool.root / "m2.log").read_text()
    assert "the pool's token was rotated; joining again" in said or "dropped out of the pool; joining again" in said
