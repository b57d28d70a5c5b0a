"""A run whose Ray cluster disappears mid-training is requeued and resumes from its checkpoint on the new one."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlmodel import Session

from scheduler.local_ray import start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.archive.service import list_artifacts, object_path
from service.models import Role, Run
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user

pytestmark = pytest.mark.ray


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _head(base: int, token: str):
    return start_head(base_port=base, dashboard_port=base + 1000, token=token, num_cpus=2,
                      temp_dir=Path(tempfile.mkdtemp(prefix="obs-ray-resume-", dir="/tmp")))


def test_run_resumes_after_the_pool_is_replaced(lite_engine, lite_session: Session, lite_settings) -> None:
    admin = create_user(lite_session, Role.admin)
    plan = {**TINY_TRAIN, "steps": 1200, "checkpoint_every": 100}
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin), job_plan=plan))
    settings = lite_settings.model_copy(update={"job_python": sys.executable})
    # Clear of the session head's ports (6700+: its workers take 6800-6899, its dashboard 7700) and of the pool
    # test's head (7100+, workers 7200-7299, dashboard 8100) and joined worker (7400-7599).
    token, base = secrets.token_hex(16), int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 1200
    head = _head(base, token)
    try:
        scheduler = Scheduler(lite_engine, settings, RayBackend(head.dashboard_url, token))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            scheduler.tick()
            with Session(lite_engine) as session:
                step = session.get(Run, run.id).progress_detail.get("step", 0)
            if step >= 300:
                break
            time.sleep(0.3)
        assert step >= 300, "training never got going"
    finally:
        head.kill()  # the whole cluster crashes, the job with it
    staging = str(scheduler.staging_dir(run))
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if staging in _read(p)], "the job outlived its pool"

    head = _head(base, token)
    try:
        scheduler.backend = RayBackend(head.dashboard_url, token)
        scheduler.reconcile()
        with Session(lite_engine) as session:
            requeued = session.get(Run, run.id)
        assert requeued.state == "queued" and "resume" in requeued.message
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            scheduler.tick()
            with Session(lite_engine) as session:
                final = session.get(Run, run.id)
            if final.state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
    finally:
        head.stop()
    assert final.state == "succeeded", final.message
    assert final.attempt == 2
    with Session(lite_engine) as session:
        log = next(a for a in list_artifacts(session, run.id) if a.name == "job.log")
    text = object_path(settings.resolved_archive_dir, log.sha256).read_text()
    assert "resumed from step " in text, text[:600]
    resumed_at = int(text.split("resumed from step ")[1].split()[0])
    assert resumed_at >= 300 and resumed_at % 100 == 0
