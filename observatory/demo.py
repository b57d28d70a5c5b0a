"""A fresh embedded observatory: demo accounts, calls with proposals under review, and one awarded run training."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

from sqlmodel import Session

from service.allocations.service import award_proposal
from service.archive.service import store_for
from service.auth.service import create_user
from service.calls.schemas import CallCreate, CycleCreate
from service.calls.service import create_call, create_cycle
from service.config import Settings
from service.datasets.service import ensure_bundled
from service.db import make_engine
from service.migrations import upgrade
from service.models import Call, CallKind, PriorityClass, Role
from service.proposals.schemas import ProposalCreate
from service.proposals.service import create_proposal
from service.review.assignments import start_review
from service.timeutil import utcnow

# email, name, role, password, institution. Rui shares Rosa's institution, so review keeps him off her proposal.
ACCOUNTS = [
    ("admin@observatory.example", "Ada Admin", Role.admin, "demo-admin-pass", "Commons Observatory"),
    ("researcher@observatory.example", "Rosa Researcher", Role.researcher, "demo-researcher-pass", "Utrecht"),
    ("reviewer@observatory.example", "Rui Reviewer", Role.reviewer, "demo-reviewer-pass", "Utrecht"),
    ("reviewer2@observatory.example", "Rhea Reviewer", Role.reviewer, "demo-reviewer2-pass", "Porto"),
    ("reviewer3@observatory.example", "Remy Reviewer", Role.reviewer, "demo-reviewer3-pass", "Lyon"),
    ("reviewer4@observatory.example", "Rania Reviewer", Role.reviewer, "demo-reviewer4-pass", "Cairo"),
    ("researcher2@observatory.example", "Sami Scientist", Role.researcher, "demo-researcher2-pass", "Tampere"),
    ("researcher3@observatory.example", "Tove Theorist", Role.researcher, "demo-researcher3-pass", "Bergen"),
    ("owner@observatory.example", "Otto Owner", Role.owner, "demo-owner-pass", "Tartu"),
]
UNDER_REVIEW = [  # (author's index in ACCOUNTS, title, abstract, steps)
    (1, "Which training images does a small model reproduce?",
     "Train on the bundled set and measure how close samples come to their nearest training image.", 600),
    (6, "Leaving one author out",
     "Train twice, with and without one author's images, and compare what the samples borrow from them.", 400),
    (7, "How sampling steps trade speed for fidelity",
     "Sample one checkpoint with 10 to 100 denoising steps and measure the differences.", 300),
    (6, "Resolution and memorisation",
     "Does a 16-pixel model copy less than a 32-pixel one? Train both on the same images.", 500),
]


def demo_cpus() -> int:
    """The demo's one run trains on up to four of this machine's cores (its torch threads follow)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def demo_settings(settings: Settings) -> Settings:
    """The demo's own embedded observatory under var/demo/: it never touches a configured database or archive.
    Its Ray head takes an owner's machine on this host (`observatory pool join`), so its ports listen beyond
    loopback, behind the pool's token."""
    return settings.model_copy(update={"var_dir": settings.var_dir / "demo", "database_url": None,
                                       "archive_dir": None, "ray_address": "local", "cpus_per_run": demo_cpus(),
                                       "ray_accept_workers": True})


def reset(settings: Settings) -> None:
    """Remove the demo's database, archive and Ray files, so the demo starts fresh."""
    if not settings.var_dir.name == "demo":
        raise ValueError(f"refusing to reset {settings.var_dir}: only a demo folder is reset")
    for path in (settings.var_dir / "observatory.db", settings.resolved_archive_dir, settings.ray_temp_dir,
                 settings.head_node_dir):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (settings.var_dir / f"observatory.db{suffix}").unlink(missing_ok=True)


def seed(settings: Settings, steps: int) -> tuple[int, int]:
    """Accounts; a cycle with a Director's Discretionary call whose training proposal is awarded and queued, a
    regular call past its deadline with four proposals under review, and an open call. Returns the awarded
    proposal's and its run's ids."""
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with Session(engine, expire_on_commit=False) as session:
        ensure_bundled(session, store_for(settings))
        people = [create_user(session, email=e, name=n, roles=[r], password=p, institution=i)
                  for e, n, r, p, i in ACCOUNTS]
        admin, researcher = people[0], people[1]
        now = utcnow()
        cycle = create_cycle(session, actor=admin, data=CycleCreate(name="Cycle 1", capacity_gpu_hours=200,
                                                                   director_reserve_gpu_hours=20))

        def call(title: str, kind: CallKind, capacity: float, closes_in_days: float, description: str) -> Call:
            return create_call(session, actor=admin, data=CallCreate(
                title=title, kind=kind, cycle_id=cycle.id, opens_at=now - timedelta(days=30),
                closes_at=now + timedelta(days=closes_in_days), capacity_gpu_hours=capacity, exclusive_months=12,
                description=description))

        director = call("Director's Discretionary time", CallKind.director, 20, 335,
                        "Urgent or exploratory work, decided by the director at any time from the cycle's reserve.")
        proposal = create_proposal(session, actor=researcher, call_id=director.id, data=ProposalCreate(
            title="Does a tiny model copy its training images?",
            abstract="Train a 1.1M-parameter UNet on the twelve bundled sample images and look at its samples.",
            justification="A first look at memorisation: with so few images, samples should resemble them closely.",
            requested_gpu_hours=1.0, job_plan={"kind": "train", "steps": steps}, submit=True,
        ))
        _, run = award_proposal(session, actor=admin, proposal_id=proposal.id, gpu_hours=1.0,
                                gpus_per_run=max(settings.gpus_per_run, 1), priority=PriorityClass.A)
        reviewed = call("Cycle 1 open call", CallKind.regular, 100, 1,
                        "Train, sample or analyse the observatory's diffusion model. Its deadline has passed and "
                        "its proposals are under review.")
        for author, title, abstract, plan_steps in UNDER_REVIEW:
            create_proposal(session, actor=people[author], call_id=reviewed.id, data=ProposalCreate(
                title=title, abstract=abstract, requested_gpu_hours=1.0, submit=True,
                justification="Each run is small enough for the pool's consumer GPUs; the plan says what it needs.",
                job_plan={"kind": "train", "steps": plan_steps}))
        reviewed.closes_at = utcnow()  # the deadline passes, and the chair starts the review
        session.add(reviewed)
        start_review(session, actor=admin, call_id=reviewed.id)
        call("Cycle 1 second call", CallKind.regular, 80, 30, "Open for proposals: train, sample or analyse the "
                                                               "observatory's diffusion model.")
        session.commit()
    engine.dispose()
    return proposal.id, run.id
