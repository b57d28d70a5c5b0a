"""What a worker leaves in its staging folder is untrusted: the archive takes only declared outputs, verified, and
never follows a link or reads outside the run's own folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from jobs.kinds import job_kind
from jobs.outputs import declare
from scheduler.loop import Scheduler
from scheduler.ray_backend import JobSnapshot, JobState
from service.archive.service import accept_outputs, list_artifacts, object_path
from service.config import Settings
from service.files import private_secret_file
from service.models import Role, Run, RunState
from tests.factories import award, create_call, create_proposal, create_user
from tests.test_scheduler_reconcile import ScriptedPool

TRAIN_FILES = {"checkpoint.pt": b"weights", "samples.png": b"\x89PNG\r\n\x1a\nsamples",
               "training_images.png": b"\x89PNG\r\n\x1a\ntraining", "metrics.json": b"{}", "attribution.json": b"{}"}


@pytest.fixture
def run(lite_session: Session) -> Run:
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin)))
    return run


def _staging(settings: Settings, run: Run) -> Path:
    staging = settings.resolved_archive_dir / "staging" / f"run-{run.id}"
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _secret(settings: Settings) -> Path:
    path = settings.var_dir / "secret_key"
    private_secret_file(path, lambda: "the portal's session key")
    return path


def _write(staging: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (staging / name).write_bytes(data)


def _accept(session: Session, settings: Settings, run: Run, staging: Path) -> list[str]:
    return accept_outputs(session, archive_dir=settings.resolved_archive_dir, run=run, staging=staging,
                          kind=job_kind("train"))


def _archived(session: Session, settings: Settings, run: Run) -> dict[str, bytes]:
    return {a.name: object_path(settings.resolved_archive_dir, a.sha256).read_bytes()
            for a in list_artifacts(session, run.id)}


def test_declared_outputs_are_archived_with_the_kinds_media_types(lite_session, lite_settings, run) -> None:
    staging = _staging(lite_settings, run)
    _write(staging, {**TRAIN_FILES, "notes.txt": b"not declared"})
    declare(staging, job_kind("train").outputs)
    assert _accept(lite_session, lite_settings, run, staging) == []
    archived = _archived(lite_session, lite_settings, run)
    assert archived == TRAIN_FILES  # notes.txt was not declared, so it was not taken
    media = {a.name: a.media_type for a in list_artifacts(lite_session, run.id)}
    assert media["checkpoint.pt"] == "application/octet-stream" and media["samples.png"] == "image/png"


def test_a_planted_symlink_is_never_followed(lite_session, lite_settings, run) -> None:
    secret = _secret(lite_settings)
    staging = _staging(lite_settings, run)
    _write(staging, TRAIN_FILES)
    declare(staging, job_kind("train").outputs)
    # The worker swaps a declared file for a link to the portal's secret and declares the secret's digest.
    (staging / "samples.png").unlink()
    os.symlink(secret, staging / "samples.png")
    document = json.loads((staging / "outputs.json").read_text())
    for entry in document["outputs"]:
        if entry["name"] == "samples.png":
            entry["sha256"] = hashlib.sha256(secret.read_bytes()).hexdigest()
            entry["size"] = secret.stat().st_size
    (staging / "outputs.json").write_text(json.dumps(document))

    problems = _accept(lite_session, lite_settings, run, staging)
    assert any(p.startswith("samples.png") for p in problems)
    assert "missing outputs: samples.png" in problems
    assert secret.read_bytes() not in _archived(lite_session, lite_settings, run).values()


def test_a_hard_link_to_a_secret_is_refused(lite_session, lite_settings, run) -> None:
    secret = _secret(lite_settings)
    staging = _staging(lite_settings, run)
    _write(staging, TRAIN_FILES)
    (staging / "metrics.json").unlink()
    os.link(secret, staging / "metrics.json")
    declare(staging, job_kind("train").outputs)
    problems = _accept(lite_session, lite_settings, run, staging)
    assert any(p.startswith("metrics.json") for p in problems)


def test_a_linked_staging_folder_and_a_linked_declaration_are_refused(lite_session, lite_settings, run,
                                                                      tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write(elsewhere, TRAIN_FILES)
    declare(elsewhere, job_kind("train").outputs)
    staging = lite_settings.resolved_archive_dir / "staging" / f"run-{run.id}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, staging)
    assert _accept(lite_session, lite_settings, run, staging) == [f"the job left no output folder ({staging.name})"]

    staging.unlink()
    staging.mkdir()
    _write(staging, TRAIN_FILES)
    os.symlink(elsewhere / "outputs.json", staging / "outputs.json")
    assert _accept(lite_session, lite_settings, run, staging)[0].startswith("no valid output declaration")
    assert list_artifacts(lite_session, run.id) == []


def test_names_the_kind_does_not_allow_and_wrong_digests_are_refused(lite_session, lite_settings, run) -> None:
    staging = _staging(lite_settings, run)
    _write(staging, {**TRAIN_FILES, "page.svg": b"<svg onload='alert(1)'/>"})
    declare(staging, job_kind("train").outputs)
    document = json.loads((staging / "outputs.json").read_text())
    document["outputs"].append({"name": "page.svg", "kind": "samples", "media_type": "image/svg+xml", "size": 24,
                                "sha256": "0" * 64})
    for entry in document["outputs"]:
        if entry["name"] == "checkpoint.pt":
            entry["sha256"] = "f" * 64
    (staging / "outputs.json").write_text(json.dumps(document))
    problems = _accept(lite_session, lite_settings, run, staging)
    assert "page.svg: not an output a train job may declare" in problems
    assert "checkpoint.pt: its sha256 or size does not match the declaration" in problems
    names = {a.name for a in list_artifacts(lite_session, run.id)}
    assert "page.svg" not in names and "checkpoint.pt" not in names


def test_the_service_never_writes_through_a_planted_link(lite_engine: Engine, lite_session, lite_settings,
                                                          run) -> None:
    """The log and manifest go straight to the store: a link planted where they used to be written stays idle."""
    victim = lite_settings.var_dir / "victim.txt"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("untouched")
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 1
    staging = _staging(lite_settings, run)
    for name in ("manifest.json", "job.log"):
        os.symlink(victim, staging / name)
    _write(staging, TRAIN_FILES)
    declare(staging, job_kind("train").outputs)
    with Session(lite_engine) as session:
        submission = session.get(Run, run.id).submission_id
    pool.snapshots[submission] = JobSnapshot(JobState.succeeded)
    pool.log = "done"
    scheduler.reconcile()
    assert victim.read_text() == "untouched"
    with Session(lite_engine) as session:
        assert session.get(Run, run.id).state == RunState.succeeded
        assert {a.name for a in list_artifacts(session, run.id)} == {*TRAIN_FILES, "job.log", "manifest.json"}


def test_a_run_whose_outputs_are_missing_fails_and_says_which(lite_engine: Engine, lite_settings, run) -> None:
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings, pool)
    assert scheduler.dispatch() == 1
    staging = _staging(lite_settings, run)
    _write(staging, {"metrics.json": b"{}"})
    declare(staging, job_kind("train").outputs)
    with Session(lite_engine) as session:
        submission = session.get(Run, run.id).submission_id
    pool.snapshots[submission] = JobSnapshot(JobState.succeeded)
    scheduler.reconcile()
    with Session(lite_engine) as session:
        finished = session.get(Run, run.id)
        assert finished.state == RunState.failed
        assert "missing outputs: checkpoint.pt, samples.png, training_images.png, attribution.json" in finished.message
        assert {a.name for a in list_artifacts(session, run.id)} == {"metrics.json", "job.log", "manifest.json"}
