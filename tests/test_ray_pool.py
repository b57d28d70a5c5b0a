"""The pool: a second Ray node joins the head over loopback, with the cluster's token, and takes work."""

from __future__ import annotations

import sys
import time

import pytest
from ray.exceptions import AuthenticationError
from ray.job_submission import JobSubmissionClient
from sqlmodel import Session

from scheduler.local_ray import join_worker
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


def test_second_node_joins_and_runs_a_job(ray_head, tmp_path, lite_engine, lite_settings) -> None:
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
