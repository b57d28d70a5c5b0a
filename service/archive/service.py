"""The archive: run outputs stored content-addressed (objects/ab/abcdef...), readable by the proposal's members
during the exclusive-access period and by everyone after it."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import shutil
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from service.errors import NotFound
from service.models import Artifact, Award, Proposal, ProposalMember, Run, User
from service.timeutil import utcnow

KIND_BY_NAME = {
    "checkpoint.pt": "checkpoint",
    "samples.png": "samples",
    "training_images.png": "dataset-preview",
    "metrics.json": "metrics",
    "attribution.json": "attribution",
    "job.log": "log",
    "manifest.json": "manifest",
}


def object_path(archive_dir: Path, sha256: str) -> Path:
    return archive_dir / "objects" / sha256[:2] / sha256


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ingest_file(session: Session, *, archive_dir: Path, run: Run, path: Path, name: str | None = None) -> Artifact:
    """Copy a file into the object store (once per content) and record it as the run's artifact."""
    name = name or path.name
    sha = sha256_file(path)
    target = object_path(archive_dir, sha)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
    existing = session.exec(select(Artifact).where(Artifact.run_id == run.id, Artifact.name == name)).first()
    artifact = existing or Artifact(run_id=run.id, name=name, kind="", sha256="", size=0, media_type="")
    artifact.kind = KIND_BY_NAME.get(name, "output")
    artifact.sha256, artifact.size = sha, target.stat().st_size
    artifact.media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    session.add(artifact)
    session.flush()
    return artifact


def ingest_bytes(session: Session, *, archive_dir: Path, run: Run, name: str, data: bytes) -> Artifact:
    staging = archive_dir / "staging" / f"run-{run.id}"
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / name
    path.write_bytes(data)
    return ingest_file(session, archive_dir=archive_dir, run=run, path=path, name=name)


def manifest(session: Session, run: Run) -> dict[str, Any]:
    """What a run produced, with checksums, and where its training data came from."""
    proposal = session.get(Proposal, run.proposal_id)
    files = [
        {"name": a.name, "kind": a.kind, "sha256": a.sha256, "size": a.size, "media_type": a.media_type}
        for a in list_artifacts(session, run.id) if a.name != "manifest.json"
    ]
    return {"run": run.id, "proposal": proposal.id, "proposal_title": proposal.title, "job_kind": run.job_kind,
            "job_plan": run.job_plan, "state": str(run.state), "gpu_seconds": round(run.gpu_seconds, 3),
            "files": files}


def write_manifest(session: Session, *, archive_dir: Path, run: Run) -> Artifact:
    data = json.dumps(manifest(session, run), indent=2, ensure_ascii=False).encode()
    return ingest_bytes(session, archive_dir=archive_dir, run=run, name="manifest.json", data=data)


def list_artifacts(session: Session, run_id: int) -> list[Artifact]:
    return list(session.exec(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)))


def exclusive_until(session: Session, run_id: int):
    run = session.get(Run, run_id)
    award = session.get(Award, run.award_id) if run else None
    return award.exclusive_until if award else None


def can_download(session: Session, actor: User | None, run_id: int) -> bool:
    """Members of the proposal during the exclusive-access period; anyone, signed in or not, after it."""
    run = session.get(Run, run_id)
    if run is None:
        return False
    until = exclusive_until(session, run_id)
    if until is not None and utcnow() >= until:
        return True
    return actor is not None and session.get(ProposalMember, (run.proposal_id, actor.id)) is not None


def visible_artifacts(session: Session, *, actor: User | None, run_id: int) -> list[Artifact]:
    if not can_download(session, actor, run_id):
        raise NotFound(f"no outputs of run {run_id} that you may read")
    return list_artifacts(session, run_id)


def open_artifact(session: Session, *, actor: User | None, archive_dir: Path, run_id: int,
                  name: str) -> tuple[Artifact, Path]:
    if not can_download(session, actor, run_id):
        raise NotFound(f"no outputs of run {run_id} that you may read")
    artifact = session.exec(select(Artifact).where(Artifact.run_id == run_id, Artifact.name == name)).first()
    if artifact is None:
        raise NotFound(f"run {run_id} has no output named {name!r}")
    path = object_path(archive_dir, artifact.sha256)
    if not path.exists():
        raise NotFound(f"{name} is recorded but missing from the archive; tell an operator")
    return artifact, path


def find_checkpoint(session: Session, sha256: str) -> Artifact | None:
    return session.exec(
        select(Artifact).where(Artifact.sha256 == sha256, Artifact.kind == "checkpoint").order_by(Artifact.id)
    ).first()
