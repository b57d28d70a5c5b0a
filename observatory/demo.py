"""A fresh embedded observatory with a call, demo accounts and one proposal awarded and queued for training."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

from sqlmodel import Session

from service.allocations.service import award_proposal
from service.auth.service import create_user
from service.calls.schemas import CallCreate
from service.calls.service import create_call
from service.config import Settings
from service.db import make_engine
from service.migrations import upgrade
from service.models import Role
from service.proposals.schemas import ProposalCreate
from service.proposals.service import create_proposal
from service.timeutil import utcnow

ACCOUNTS = [
    ("admin@observatory.example", "Ada Admin", Role.admin, "demo-admin-pass"),
    ("researcher@observatory.example", "Rosa Researcher", Role.researcher, "demo-researcher-pass"),
    ("reviewer@observatory.example", "Rui Reviewer", Role.reviewer, "demo-reviewer-pass"),
]


def demo_cpus() -> int:
    """The demo's one run trains on up to four of this machine's cores (its torch threads follow)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def demo_settings(settings: Settings) -> Settings:
    """The demo's own embedded observatory under var/demo/: it never touches a configured database or archive."""
    return settings.model_copy(update={"var_dir": settings.var_dir / "demo", "database_url": None,
                                       "archive_dir": None, "ray_address": "local", "cpus_per_run": demo_cpus()})


def reset(settings: Settings) -> None:
    """Remove the demo's database, archive and Ray files, so the demo starts fresh."""
    if not settings.var_dir.name == "demo":
        raise ValueError(f"refusing to reset {settings.var_dir}: only a demo folder is reset")
    for path in (settings.var_dir / "observatory.db", settings.resolved_archive_dir, settings.ray_temp_dir):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (settings.var_dir / f"observatory.db{suffix}").unlink(missing_ok=True)


def seed(settings: Settings, steps: int) -> tuple[int, int]:
    """Accounts, an open call and an awarded training proposal; returns the proposal's and its run's ids."""
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with Session(engine, expire_on_commit=False) as session:
        admin, researcher, _ = (create_user(session, email=e, name=n, roles=[r], password=p) for e, n, r, p in ACCOUNTS)
        now = utcnow()
        call = create_call(session, actor=admin, data=CallCreate(
            title="Commons Observatory Cycle 1", opens_at=now - timedelta(days=1), closes_at=now + timedelta(days=30),
            capacity_gpu_hours=100, exclusive_months=12,
            description="The first open call: train, sample or analyse the observatory's diffusion model.",
        ))
        proposal = create_proposal(session, actor=researcher, call_id=call.id, data=ProposalCreate(
            title="Does a tiny Commons model copy its training images?",
            abstract="Train a 1.1M-parameter UNet on the twelve-image commons-mini set and look at its samples.",
            justification="A first look at memorisation: with so few images, samples should resemble them closely.",
            requested_gpu_hours=1.0, job_plan={"kind": "train", "steps": steps}, submit=True,
        ))
        _, run = award_proposal(session, actor=admin, proposal_id=proposal.id, gpu_hours=1.0,
                                gpus_per_run=max(settings.gpus_per_run, 1))
        session.commit()
    engine.dispose()
    return proposal.id, run.id
