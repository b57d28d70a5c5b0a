"""Screenshots of the portal's main pages for the docs: `python -m tests.screenshots [FOLDER]` (default
docs/screenshots/). It builds a throwaway observatory (SQLite in a temporary folder), fills it with a call, a
researcher's two finished runs and a waiting one, and a call under review, and photographs the proposal form (with
its field errors), a run page, the runs list, the comparison of the two runs, a reviewer's packet and the chair's
ranking in Debian's chromium."""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright
from sqlmodel import Session, select

from jobs.dataset import load
from scheduler.loop import Scheduler
from service.archive.service import store_for
from service.config import Settings
from service.datasets.service import ensure_bundled
from service.db import make_engine
from service.migrations import upgrade
from service.models import (
    AttemptLogChunk,
    AttemptState,
    PoolNode,
    Proposal,
    ReviewAssignment,
    Role,
    Run,
    RunAttempt,
    RunState,
)
from service.pool.standing import labels_for
from service.review import assignments, reviews
from service.review.reviews import ReviewCreate
from service.timeutil import utcnow
from tests.factories import (
    PASSWORD,
    TINY_TRAIN,
    archive_outputs,
    award,
    create_call,
    create_machine,
    create_proposal,
    create_user,
    start_review,
)
from tests.live import free_port, live_server
from tests.pools import TRAIN_FILES, ScriptedPool

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent


def grid_png() -> bytes:
    """A 4x3 grid of the bundled dataset's images: a stand-in sample grid with real pictures in it."""
    images = load({}, None, 32, name="skimage-samples").images
    sheet = Image.new("RGB", (4 * 32, 3 * 32))
    for i, image in enumerate(images[:12]):
        pixels = ((image.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype("uint8")
        sheet.paste(Image.fromarray(pixels), ((i % 4) * 32, (i // 4) * 32))
    out = io.BytesIO()
    sheet.resize((256, 192), Image.Resampling.NEAREST).save(out, format="PNG")
    return out.getvalue()


def seed(settings: Settings, engine) -> tuple[str, list[int]]:  # type: ignore[no-untyped-def]
    with Session(engine, expire_on_commit=False) as session:
        admin, pi = create_user(session, Role.admin), create_user(session)
        call = create_call(session, admin, capacity=20)
        runs = []
        for steps, curve in ((300, [1.1, 0.4, 0.12, 0.06, 0.04]), (900, [1.1, 0.3, 0.08, 0.03, 0.019])):
            proposal = create_proposal(session, pi, call, title=f"Memorisation after {steps} steps",
                                       job_plan={**TINY_TRAIN, "steps": steps})
            _, run = award(session, admin, proposal)
            metrics = {"steps": steps, "final_loss": curve[-1], "seconds_per_step": 0.18, "loss_curve": curve}
            archive_outputs(session, settings, run, {**TRAIN_FILES, "samples.png": grid_png(),
                                                     "training_images.png": grid_png(),
                                                     "metrics.json": json.dumps(metrics).encode()})
            # Shown as finished (this script photographs pages; the scheduler's tests cover how runs get there).
            run = session.get(Run, run.id)
            run.state, run.progress, run.finished_at = RunState.succeeded, 1.0, utcnow()
            run.progress_detail = {"phase": "sample", "step": steps, "total": steps, "fraction": 1.0}
            session.add(run)
            session.commit()
            runs.append(run.id)
        award(session, admin, create_proposal(session, pi, call, title="A leave-out pair, first half"))
        Scheduler(engine, settings.model_copy(update={"run_on_head": False}), ScriptedPool()).dispatch()
        runs.append(_sampling_run(session, admin, pi, call))
        return pi.email, runs + [call.id]


def _sampling_run(session: Session, admin, pi, call) -> int:  # type: ignore[no-untyped-def]
    """A run on an owner's machine, its training done and its samples being drawn, with its log so far."""
    _, run = award(session, admin, create_proposal(session, pi, call, title="Memorisation after 600 steps",
                                                   job_plan={**TINY_TRAIN, "steps": 600}))
    run = session.get(Run, run.id)
    curve = [[step, 1.1 * (0.993 ** step) + 0.02] for step in range(0, 601, 20)]
    run.state, run.attempt, run.progress, run.started_at = RunState.running, 1, 1.0, utcnow()
    run.progress_detail = {"phase": "sample", "step": 600, "total": 600, "fraction": 1.0, "sample_step": 12,
                           "sample_total": 30, "loss": 0.0231, "curve": curve}
    session.add(run)
    session.add(RunAttempt(run_id=run.id, number=1, pool="default", submission_id="screenshot-1",
                           token_hash="0" * 64, state=AttemptState.running, node_id="box", node_name="attic-box",
                           started_at=utcnow()))
    session.flush()
    attempt = session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id)).one()
    log = "training on cpu with 4 CPU threads\n" + "".join(
        f"step {step} of 600, loss {1.1 * (0.993 ** step) + 0.02:.4f}, 6.10 steps/s, about {(600 - step) // 6} s "
        "left\n" for step in range(60, 601, 60)) + "drawing 16 samples: denoising step 1 of 30\n"
    session.add(AttemptLogChunk(attempt_id=attempt.id, offset=0, text=log))
    session.commit()
    return run.id


def seed_machine(engine) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """An owner's approved machine, online; returns the owner's e-mail and the machine's id."""
    with Session(engine, expire_on_commit=False) as session:
        admin, owner = create_user(session, Role.admin), create_user(session, name="Otto Owner")
        machine, _ = create_machine(session, owner, admin, name="the 3090 in the attic",
                                    gpu_model="NVIDIA GeForce RTX 3090", gpu_count=1, vram_gb=24,
                                    cuda_capability="8.6", cpus=16, memory_gb=64)
        session.add(PoolNode(node_id="box", address="10.8.0.7", alive=True, resources={"CPU": 16, "GPU": 1},
                             labels=labels_for(machine)))
        session.commit()
        return owner.email, machine.id


REVIEWED = {"Which training images does a small model reproduce?": (1.6, 2.0, 1.4),
            "Leaving one author out": (2.2, 2.6, 2.0), "Sampling steps against fidelity": (3.1, 3.4, 2.9),
            "Resolution and memorisation": (4.2, 3.9, 4.4)}


def seed_review(engine) -> tuple[str, str, int, int]:  # type: ignore[no-untyped-def]
    """A call reviewed by three reviewers, one review still to write; returns a reviewer's and the chair's e-mail,
    that reviewer's open assignment and the call."""
    with Session(engine, expire_on_commit=False) as session:
        chair = create_user(session, Role.admin, name="Ada Chair")
        panel = [create_user(session, Role.reviewer, name=n) for n in ("Rui Reviewer", "Rhea Reviewer",
                                                                         "Remy Reviewer")]
        call = create_call(session, chair, capacity=6, reviewers_per_proposal=3, title="Cycle 1 open call")
        for i, title in enumerate(REVIEWED):
            author = create_user(session, name=f"Author {i + 1}")
            create_proposal(session, author, call, title=title, requested_gpu_hours=2,
                            job_plan={"kind": "train", "steps": 300 * (i + 1)},
                            abstract="Train on the bundled images and measure what the samples borrow from them.")
        start_review(session, chair, call)
        open_assignment = None
        for a in session.exec(select(ReviewAssignment).order_by(ReviewAssignment.id)):
            reviewer = next(r for r in panel if r.id == a.reviewer_id)
            title = session.get(Proposal, a.proposal_id).title
            assignments.accept(session, actor=reviewer, assignment_id=a.id)
            if reviewer is panel[0] and open_assignment is None:
                open_assignment = a.id  # left for the screenshot: accepted, not yet reviewed
                continue
            reviews.submit(session, actor=reviewer, assignment_id=a.id, data=ReviewCreate(
                grade=REVIEWED[title][panel.index(reviewer)], expertise="high",
                for_committee="Sound plan; the feasibility fits the request.", for_pi="Clear and feasible."))
        session.commit()
        return panel[0].email, chair.email, open_assignment, call.id


def _signed_in(browser, portal: str, email: str):  # type: ignore[no-untyped-def]
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    page.goto(f"{portal}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    return page


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/observatory.db"
        upgrade(url)
        engine = make_engine(url)
        settings = Settings(var_dir=Path(tmp) / "var", database_url=url, secret_key="screenshots",
                            ray_address="unused", pool_join_address="10.8.0.1:6390")
        with Session(engine) as session:
            ensure_bundled(session, store_for(settings))
            session.commit()
        email, (first, second, sampling, call_id) = seed(settings, engine)
        reviewer, chair, assignment, reviewed = seed_review(engine)
        owner, machine = seed_machine(engine)
        port = free_port()
        with live_server(settings, engine, port) as portal, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{portal}/login")
            page.get_by_label("Email").fill(email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.goto(f"{portal}/calls/{call_id}/propose")
            page.get_by_label("Title").fill("  ")
            page.locator("input[name='train.exclude_authors']").fill("Nassa")
            page.get_by_role("button", name="Submit proposal").click()
            shots = {"proposal-form.png": None, f"run-{second}.png": f"/runs/{second}", "runs.png": "/runs",
                     "compare.png": f"/runs/compare?a={first}&b={second}", "run-sampling.png": f"/runs/{sampling}"}
            for name, path in shots.items():
                if path:
                    page.goto(portal + path)
                page.screenshot(path=str(folder / name), full_page=True)
                print(f"wrote {folder / name}")
            for who, name, path in ((reviewer, "review.png", f"/review/{assignment}"),
                                    (chair, "ranking.png", f"/calls/{reviewed}/ranking"),
                                    (owner, "owner-machine.png", f"/machines/{machine}")):
                page = _signed_in(browser, portal, who)
                page.goto(portal + path)
                if name == "owner-machine.png":  # with its join command shown, as after "Show the join command"
                    page.get_by_role("button", name="Show the join command").click()
                page.screenshot(path=str(folder / name), full_page=True)
                print(f"wrote {folder / name}")
            browser.close()
        engine.dispose()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
