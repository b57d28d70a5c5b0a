"""The local Ray head dies mid-run: the runtime notices, starts a new head (never mistaking a draining old one for
its own), and the run resumes there from its last shipped checkpoint."""

from __future__ import annotations

import http.server
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import Session

from observatory.runtime import SchedulerThread, open_pool
from scheduler.local_ray import RayNode, start_head
from scheduler.loop import Scheduler
from service.archive.service import list_artifacts, read_object, store_for
from service.attempts.service import attempts_of
from service.models import AttemptState, Role, Run
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.live import free_port, live_server

pytestmark = pytest.mark.ray
# Clear of the other tests' Ray ports: 8200-8207, workers 8300-8399, dashboard 9200.
BASE = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 1500


def _old_dashboard(port: int, head_name: str) -> http.server.ThreadingHTTPServer:
    """What an old head still draining after a kill -9 answers on the dashboard port: jobs, and a live head node
    under that old head's name."""
    nodes = json.dumps({"data": {"result": {"result": [
        {"is_head_node": True, "state": "ALIVE", "node_name": head_name}]}}}).encode()

    class OldDashboard(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(nodes if self.path.startswith("/api/v0/nodes") else b"[]")

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), OldDashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_head_waits_for_its_ports_and_refuses_ones_still_in_use(tmp_path: Path) -> None:
    port = free_port()
    server = _old_dashboard(port, "observatory-head-old")
    try:
        with pytest.raises(RuntimeError, match=rf"ports \[{port}\] are still in use"):
            start_head(base_port=free_port(), dashboard_port=port, token="t", timeout=3,
                       temp_dir=Path(tempfile.mkdtemp(prefix="obs-ray-old-", dir="/tmp")) / "t")
    finally:
        server.shutdown()


def test_a_head_never_adopts_a_dashboard_that_is_not_its_own(monkeypatch) -> None:
    """An old head's dashboard answers every call a new head makes, with a live head node: only the name tells
    them apart. Past the port check (as when the old head comes back on the port after it), the new head is not
    adopted on that answer: start_head fails instead of returning a node that is not its own."""
    from scheduler import local_ray

    port = free_port()
    server = _old_dashboard(port, "observatory-head-old")
    try:
        seen = RayNode(process=None, temp_dir=Path("/nonexistent"), log_path=Path("/nonexistent"),  # type: ignore[arg-type]
                       gcs_address="", dashboard_url=f"http://127.0.0.1:{port}", token="t")
        assert local_ray._our_head_answers(seen, "observatory-head-old")  # the same answer, under its own name
        assert not local_ray._our_head_answers(seen, "observatory-head-new")
        monkeypatch.setattr(local_ray, "wait_for_free_ports", lambda ports, timeout: None)
        with pytest.raises(RuntimeError, match="exited|did not answer"):
            start_head(base_port=free_port(), dashboard_port=port, token="t", timeout=8,
                       temp_dir=Path(tempfile.mkdtemp(prefix="obs-ray-old-", dir="/tmp")) / "t")
    finally:
        server.shutdown()


def _fresh(engine, run_id: int) -> Run:
    with Session(engine) as session:
        return session.get(Run, run_id)


def test_a_dead_head_is_replaced_and_the_run_resumes_there(lite_engine, lite_session: Session, lite_settings) -> None:
    admin = create_user(lite_session, Role.admin)
    plan = {**TINY_TRAIN, "steps": 1200, "checkpoint_every": 100, "batch_size": 16}
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin), job_plan=plan))
    served = lite_settings.model_copy(update={"checkpoint_ship_interval_s": 0.5})
    with live_server(served, lite_engine) as url:
        settings = served.model_copy(update={
            "job_python": sys.executable, "job_api_url": url, "ray_address": "local", "ray_port": BASE,
            "ray_dashboard_port": BASE + 1000, "ray_num_cpus": 2, "scheduler_interval_s": 0.3})
        pool = open_pool(settings)
        thread = SchedulerThread(Scheduler(lite_engine, settings, pool.backend), pool)
        old_head = pool.backend.head_node_id()
        thread.start()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and _fresh(lite_engine, run.id).resume_step < 200:
                time.sleep(0.3)
            pool.head.kill()  # the whole local cluster crashes, the job with it
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                final = _fresh(lite_engine, run.id)
                if final.state in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.5)
            new_head = pool.backend.head_node_id()
        finally:
            thread.stop()
            pool.stop()
    assert final.state == "succeeded", final.message
    assert new_head != old_head and thread.scheduler.backend is pool.backend
    with Session(lite_engine) as session:
        first, second = attempts_of(session, run.id)
        log = next(a for a in list_artifacts(session, run.id) if a.name == "attempt-2.log")
        text = read_object(store_for(settings), log.sha256).decode()
    assert first.state == AttemptState.lost and second.resume_step >= 200
    assert f"resumed from step {second.resume_step}" in text
