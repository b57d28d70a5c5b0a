"""The pool: a second Ray node joins the head over loopback, with the cluster's token, and takes work."""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray.exceptions import AuthenticationError
from ray.job_submission import JobSubmissionClient
from sqlmodel import Session

from scheduler.local_ray import descendants, join_worker, start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.pool.service import list_nodes

pytestmark = pytest.mark.ray


def _wait_terminal(client: JobSubmissionClient, job_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status.value
        time.sleep(0.5)
    client.stop_job(job_id)
    raise AssertionError(f"{job_id} still {status} after {timeout}s")


@pytest.fixture
def pool_head():
    """A head that takes workers from other machines (its ports are on the network, as a pool's head must be)."""
    base = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 400
    temp_dir = Path(tempfile.mkdtemp(prefix="obs-ray-pool-", dir="/tmp"))  # Ray's socket paths must stay short
    node = start_head(base_port=base, dashboard_port=base + 1000, temp_dir=temp_dir / "t",
                      token=secrets.token_hex(16), num_cpus=1, loopback_only=False)
    yield node
    node.stop()


def test_second_node_joins_and_runs_a_job(pool_head, tmp_path, lite_engine, lite_settings) -> None:
    ray_head = pool_head
    worker = join_worker(head_address=ray_head.gcs_address, base_port=int(ray_head.gcs_address.split(":")[1]) + 300,
                         temp_dir=tmp_path, token=ray_head.token, num_cpus=1, resources='{"owner_gpu_slot": 1}')
    try:
        client = JobSubmissionClient(ray_head.dashboard_url, headers={"Authorization": f"Bearer {ray_head.token}"})
        # Only the joined node has this resource, so the job can run nowhere else.
        job_id = client.submit_job(entrypoint=f"{sys.executable} -c \"print('on the owner node')\"",
                                   entrypoint_resources={"owner_gpu_slot": 1}, entrypoint_num_cpus=0)
        assert _wait_terminal(client, job_id) == "SUCCEEDED", client.get_job_logs(job_id)
        assert "on the owner node" in client.get_job_logs(job_id)

        # The scheduler's view of the pool records both nodes, the owner's with its resource.
        scheduler = Scheduler(lite_engine, lite_settings, RayBackend(ray_head.dashboard_url, ray_head.token))
        assert scheduler.watch_nodes() == 2
        with Session(lite_engine) as session:
            nodes = [n for n in list_nodes(session) if n.alive]
        assert [n.resources.get("owner_gpu_slot") for n in nodes if not n.is_head] == [1.0]
    finally:
        worker.stop()
    assert worker.process.poll() is not None


def test_the_pool_refuses_a_wrong_token(ray_head) -> None:
    with pytest.raises(AuthenticationError):
        JobSubmissionClient(ray_head.dashboard_url, headers={"Authorization": "Bearer not-the-token"}).list_jobs()


def _listening_addresses(pids: set[int]) -> set[str]:
    """The local addresses of every TCP socket these processes listen on, read from /proc."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address = fields[1].split(":")[0]
                addresses.add(_ip(address, width))
    return addresses


def _ip(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)


def test_the_embedded_head_listens_on_loopback_only(ray_head) -> None:
    """GCS, raylet, client server, dashboard and metrics: none of the embedded head's ports is on the network."""
    addresses = _listening_addresses(descendants(ray_head.pid) | {ray_head.pid})
    assert addresses, "the head listens somewhere"
    assert addresses <= {"127.0.0.1", "::1"}, addresses


def test_the_embedded_heads_files_are_private(ray_head) -> None:
    """Ray's session files (logs that name every run, sockets, spilled objects) are readable by us alone: they
    lie in a folder of mode 0700, and the files themselves are made with no group or other rights. (The one
    exception is the observatory's own `jobs` package, public source that Ray unpacks for each job with the modes
    its zip recorded; it too lies inside the 0700 folder.)"""
    assert stat.S_IMODE(ray_head.temp_dir.stat().st_mode) == 0o700
    files = [p for p in ray_head.temp_dir.rglob("*") if p.is_file() and not p.is_symlink()
             and "py_modules_files" not in p.parts]
    assert files and [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o077] == []
