"""The archive: run outputs stored content-addressed (objects/ab/abcdef...), readable by the proposal's members
during the exclusive-access period and by everyone after it."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from jobs.kinds import SERVICE_OUTPUTS, JobKind
from jobs.outputs import DECLARATION, MAX_DECLARATION_BYTES, DeclarationError, OutputSpec, parse_declaration
from service.archive.store import LocalStore
from service.errors import NotFound
from service.models import Artifact, Award, Proposal, ProposalMember, Run, User
from service.timeutil import utcnow


def store_for(archive_dir: Path) -> LocalStore:
    return LocalStore(archive_dir)


def object_path(archive_dir: Path, sha256: str) -> Path:
    return store_for(archive_dir).path(sha256)


def _record(session: Session, run: Run, spec: OutputSpec, sha: str, size: int) -> Artifact:
    existing = session.exec(select(Artifact).where(Artifact.run_id == run.id, Artifact.name == spec.name)).first()
    artifact = existing or Artifact(run_id=run.id, name=spec.name, kind="", sha256="", size=0, media_type="")
    artifact.kind, artifact.media_type, artifact.sha256, artifact.size = spec.kind, spec.media_type, sha, size
    session.add(artifact)
    session.flush()
    return artifact


def ingest_bytes(session: Session, *, archive_dir: Path, run: Run, name: str, data: bytes) -> Artifact:
    """Archive a file the observatory itself wrote for the run (its log, its manifest)."""
    spec = next((spec for spec in SERVICE_OUTPUTS if spec.name == name), None)
    if spec is None:
        raise ValueError(f"{name} is not a file the observatory writes itself")
    sha, size = store_for(archive_dir).put(io.BytesIO(data))
    return _record(session, run, spec, sha, size)


def _open_regular(directory: int, name: str) -> int:
    """A file descriptor for `name` inside the open directory: never through a link, only a plain file."""
    descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(descriptor)
        raise OSError(f"{name} is not a plain file of the job's own")
    return descriptor


def accept_outputs(session: Session, *, archive_dir: Path, run: Run, staging: Path, kind: JobKind) -> list[str]:
    """Archive what the job declared in its staging folder; returns the problems (empty: every required output is
    in the archive).

    Only names the job's kind allows are taken, with the kind's own kind and media type; each file's sha256 and
    size must match the declaration. Links are never followed, the folder itself may not be a link, and nothing
    outside it is read.
    """
    try:
        directory = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return [f"the job left no output folder ({staging.name})"]
    store, problems, accepted = store_for(archive_dir), [], set()
    try:
        try:
            with os.fdopen(_open_regular(directory, DECLARATION), "rb") as handle:
                data = handle.read(MAX_DECLARATION_BYTES + 1)
            if len(data) > MAX_DECLARATION_BYTES:
                raise DeclarationError(f"{DECLARATION} is larger than {MAX_DECLARATION_BYTES} bytes")
            declared = parse_declaration(data)
        except (OSError, DeclarationError) as exc:
            return [f"no valid output declaration: {exc}"]
        for entry in declared:
            spec = kind.spec(entry.name)
            if spec is None or (entry.kind, entry.media_type) != (spec.kind, spec.media_type):
                problems.append(f"{entry.name}: not an output a {kind.name} job may declare")
                continue
            try:
                with os.fdopen(_open_regular(directory, entry.name), "rb") as handle:
                    sha, size = store.put(handle, limit=entry.size)
            except (OSError, ValueError) as exc:
                problems.append(f"{entry.name}: {exc}")
                continue
            if (sha, size) != (entry.sha256, entry.size):
                problems.append(f"{entry.name}: its sha256 or size does not match the declaration")
                continue
            _record(session, run, spec, sha, size)
            accepted.add(spec.name)
    finally:
        os.close(directory)
    missing = [spec.name for spec in kind.outputs if spec.required and spec.name not in accepted]
    if missing:
        problems.append(f"missing outputs: {', '.join(missing)}")
    return problems


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


# Raster images the portal shows in place, each with the bytes its files begin with. Anything else (SVG, HTML,
# text, a checkpoint) is served as an attachment, and so is a "PNG" whose bytes are not one.
INLINE_RASTER = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
                 "image/gif": (b"GIF87a", b"GIF89a")}
# Sent with every download: whatever a file holds, a browser runs none of it with the portal's rights.
DOWNLOAD_HEADERS = {"Content-Security-Policy": "default-src 'none'; sandbox", "X-Content-Type-Options": "nosniff"}


def shown_inline(artifact: Artifact, path: Path) -> bool:
    """Whether a browser may show this output in place: a raster type whose bytes really are that type."""
    signatures = INLINE_RASTER.get(artifact.media_type)
    if not signatures:
        return False
    with path.open("rb") as handle:
        head = handle.read(16)
    return head.startswith(signatures)


def find_checkpoint(session: Session, sha256: str) -> Artifact | None:
    return session.exec(
        select(Artifact).where(Artifact.sha256 == sha256, Artifact.kind == "checkpoint").order_by(Artifact.id)
    ).first()
