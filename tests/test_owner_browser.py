"""An owner lends a machine, in a real browser against a real Ray head: register, an admin approves, the join
command the portal shows is run (CPU-only here), the node appears with its measured labels, paused it gets no
work, resumed it does, and "Leave now" takes it out."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from sqlmodel import Session

from scheduler.local_ray import start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.attempts.service import attempts_of
from service.db import writer
from service.models import Machine, Role, Run, RunState
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.live import free_port, live_server
from tests.test_browser import _sign_in, browser  # noqa: F401  (the module's browser fixture)

pytestmark = [pytest.mark.browser, pytest.mark.ray]
# Clear of the other tests' Ray ports: head 9400-9407, its workers 9500-9599, dashboard 10400; the owner's 9700+.
BASE = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 2700


def _run(engine, run_id: int) -> Run:
    with Session(engine) as session:
        return session.get(Run, run_id)


def test_owner_lends_a_machine(browser: Browser, tmp_path: Path, lite_engine, lite_session: Session,  # noqa: F811
                               lite_settings) -> None:
    with ExitStack() as stack:
        token = secrets.token_hex(16)
        head = start_head(base_port=BASE, dashboard_port=BASE + 1000, token=token, num_cpus=1,
                          temp_dir=Path(tempfile.mkdtemp(prefix="obs-ray-owner-", dir="/tmp")) / "t",
                          loopback_only=False, node_dir=tmp_path / "head-node")
        stack.callback(head.stop)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        served = lite_settings.model_copy(update={"pool_join_address": head.gcs_address, "ray_auth_token": token,
                                                  "run_on_head": False, "base_url": url})
        stack.enter_context(live_server(served, lite_engine, port))
        settings = served.model_copy(update={"job_python": sys.executable, "job_api_url": url})
        scheduler = Scheduler(lite_engine, settings, RayBackend(head.dashboard_url, token))
        admin, owner, pi = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)

        # The owner takes the role and registers the machine; an admin approves it.
        page = _sign_in(browser, url, owner.email)
        page.goto(f"{url}/machines")
        page.get_by_role("button", name="Become an owner").click()
        page.get_by_label("Name", exact=True).fill("the box under the desk")
        page.get_by_role("button", name="Register").click()
        expect(page.locator("#machine-state")).to_have_text("pending")
        machine_url = page.url
        desk = _sign_in(browser, url, admin.email)
        desk.goto(machine_url)
        desk.get_by_role("button", name="Approve").click()
        expect(desk.locator("#machine-state")).to_have_text("approved")

        # The portal shows the join command; it runs on "the owner's machine" against the local head.
        page.reload()
        page.get_by_role("button", name="Show the join command").click()
        command = page.locator("#join-command").inner_text().strip()
        page.reload()  # shown once: a reload neither shows it again nor replaces the token
        expect(page.locator("#join-command")).to_have_count(0)
        assert command.startswith("OBSERVATORY_MACHINE_TOKEN=mc_") and command.endswith(f"observatory pool join {url}")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "OBSERVATORY_NODE_DIR": str(tmp_path / "owner-node"), "PYTHONUNBUFFERED": "1"}
        joined = subprocess.Popen(["bash", "-c", f"exec env {command} --node-ip 127.0.0.1 --port-base {BASE + 300} "
                                   "--poll-s 1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        stack.callback(lambda: joined.poll() is None and os.killpg(joined.pid, signal.SIGTERM))
        deadline = time.monotonic() + 120
        while scheduler.watch_nodes() < 2:
            assert joined.poll() is None and time.monotonic() < deadline, joined.stdout.read()
            time.sleep(0.5)
        page.reload()
        expect(page.locator("#machine-status")).to_have_text("online")
        labels = page.locator("#labels")
        machine_id = machine_url.rsplit("/", 1)[1]
        for label in (f"observatory-machine={machine_id}", "observatory-gpu=cpu", "observatory-gpus=0"):
            expect(labels).to_contain_text(label)
        expect(page.locator("#measured")).to_contain_text("no GPU (CPU only)")

        # Paused, it gets no work: the run waits and says why.
        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_text("paused", exact=True)).to_be_visible()
        # Written in a writer's transaction (BEGIN IMMEDIATE), as the portal writes: the join command's calls write
        # to the same SQLite file meanwhile, and a plain transaction that read first could not then write.
        with Session(writer(lite_engine), expire_on_commit=False) as session:
            _, run = award(session, admin, create_proposal(session, pi, create_call(session, admin),
                                                           job_plan=TINY_TRAIN))
        for _ in range(6):
            scheduler.tick()
            time.sleep(0.3)
        waiting = _run(lite_engine, run.id)
        assert waiting.state == RunState.queued and waiting.message == "waiting: no node that takes work is online"

        # Resumed, it takes the run, which finishes there.
        page.get_by_role("button", name="Resume").click()
        deadline = time.monotonic() + 240
        while _run(lite_engine, run.id).state not in (RunState.succeeded, RunState.failed):
            assert time.monotonic() < deadline, _run(lite_engine, run.id).message
            scheduler.tick()
            time.sleep(0.3)
        assert _run(lite_engine, run.id).state == RunState.succeeded, _run(lite_engine, run.id).message
        with Session(lite_engine) as session:
            (attempt,) = attempts_of(session, run.id)
            assert attempt.machine_id == int(machine_id)
        page.reload()
        expect(page.locator("tr", has_text="Runs served").locator("td")).to_have_text("1")
        expect(page.locator("tr", has_text="Hours of work run").locator("td")).not_to_contain_text("0.0 min in all")

        # "Leave now": the join command hears it and stops its Ray worker.
        page.get_by_role("button", name="Leave now").click()
        expect(page.locator("#consequences")).to_contain_text("Nothing runs on it now")
        page.get_by_role("button", name="Yes, leave now").click()
        expect(page.locator("#machine-state")).to_have_text("left")
        output, _ = joined.communicate(timeout=90)
        assert joined.returncode == 0, output
        assert "the portal says this machine is left" in output and "the Ray worker stopped" in output
        with Session(lite_engine) as session:
            assert session.get(Machine, int(machine_id)).measured_at is not None
