"""The archive: run outputs stored content-addressed (objects/ab/abcdef...), readable by the proposal's members
during the exclusive-access period and by everyone after it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, BinaryIO

from sqlmodel import Session, select

from jobs.kinds import JobKind, service_output
from jobs.outputs import OutputSpec
from service.archive.store import ArchiveStore, LocalStore, S3Store
from service.config import Settings
from service.errors import Forbidden, Invalid, NotFound
from service.ledger.service import run_charged
from service.models import Artifact, Award, ModelVersion, Proposal, ProposalMember, Role, Run, User
from service.timeutil import utcnow

_stores: dict[tuple, ArchiveStore] = {}


def store_for(settings: Settings) -> ArchiveStore:
    """The archive's store as the settings name it (one client per configuration)."""
    archive_dir = settings.resolved_archive_dir
    if settings.archive_store == "local":
        return LocalStore(archive_dir)
    key = (settings.s3_bucket, settings.s3_endpoint_url, settings.s3_prefix, settings.s3_access_key_id, archive_dir)
    if key not in _stores:
        if not settings.s3_bucket:
            raise ValueError("OBSERVATORY_ARCHIVE_STORE=s3 needs OBSERVATORY_S3_BUCKET")
        _stores[key] = S3Store(bucket=settings.s3_bucket, spool_dir=archive_dir / "incoming",
                               endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                               access_key_id=settings.s3_access_key_id,
                               secret_access_key=settings.s3_secret_access_key, prefix=settings.s3_prefix)
    return _stores[key]


def record(session: Session, run: Run, spec: OutputSpec, sha: str, size: int,
           attempt: int | None = None) -> Artifact:
    """Name an object in the archive as one of the run's outputs (replacing an earlier one of that name)."""
    existing = session.exec(select(Artifact).where(Artifact.run_id == run.id, Artifact.name == spec.name)).first()
    artifact = existing or Artifact(run_id=run.id, name=spec.name, kind="", sha256="", size=0, media_type="")
    artifact.kind, artifact.media_type, artifact.sha256, artifact.size = spec.kind, spec.media_type, sha, size
    artifact.attempt = attempt
    session.add(artifact)
    session.flush()
    return artifact


def ingest_bytes(session: Session, *, store: ArchiveStore, run: Run, name: str, data: bytes) -> Artifact:
    """Archive a file the observatory itself wrote for the run (its log, its manifest)."""
    spec = service_output(name)
    if spec is None:
        raise ValueError(f"{name} is not a file the observatory writes itself")
    sha, size = store.put(io.BytesIO(data))
    return record(session, run, spec, sha, size)


def accept_object(*, store: ArchiveStore, kind: JobKind, name: str, stream: BinaryIO, sha256: str,
                  limit: int) -> tuple[str, int]:
    """Store one file a job sends: only a name its kind may declare, and only if its bytes hash to `sha256`."""
    if kind.spec(name) is None:
        raise Invalid(f"{name!r} is not an output a {kind.name} job may send")
    try:
        sha, size = store.put(stream, limit=limit)
    except ValueError as exc:
        raise Invalid(f"{name}: {exc}") from None
    if sha != sha256:
        raise Invalid(f"{name}: its bytes hash to {sha}, not the declared {sha256}")
    return sha, size


def accept_output(session: Session, *, store: ArchiveStore, run: Run, attempt: int, kind: JobKind, name: str,
                  stream: BinaryIO, sha256: str, limit: int) -> Artifact:
    """Take one file a job sends as one of the run's outputs."""
    sha, size = accept_object(store=store, kind=kind, name=name, stream=stream, sha256=sha256, limit=limit)
    return record(session, run, kind.spec(name), sha, size, attempt)


def missing_outputs(session: Session, run: Run, kind: JobKind) -> list[str]:
    """The required outputs of the run's kind that are not in the archive."""
    have = {a.name for a in list_artifacts(session, run.id)}
    return [spec.name for spec in kind.outputs if spec.required and spec.name not in have]


def manifest(session: Session, run: Run) -> dict[str, Any]:
    """What a run produced, with checksums, and where its training data came from."""
    proposal = session.get(Proposal, run.proposal_id)
    files = [
        {"name": a.name, "kind": a.kind, "sha256": a.sha256, "size": a.size, "media_type": a.media_type}
        for a in list_artifacts(session, run.id) if a.name != "manifest.json"
    ]
    return {"run": run.id, "proposal": proposal.id, "proposal_title": proposal.title, "job_kind": run.job_kind,
            "job_plan": run.job_plan, "state": str(run.state), "gpu_seconds": run_charged(session, run.id),
            "files": files}


def write_manifest(session: Session, *, store: ArchiveStore, run: Run) -> Artifact:
    data = json.dumps(manifest(session, run), indent=2, ensure_ascii=False).encode()
    return ingest_bytes(session, store=store, run=run, name="manifest.json", data=data)


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


def find_artifact(session: Session, run_id: int, name: str) -> Artifact | None:
    """A run's output by name, whoever asks (callers check access)."""
    return session.exec(select(Artifact).where(Artifact.run_id == run_id, Artifact.name == name)).first()


WEIGHTS = ("checkpoint", "router")  # the kinds of output that are a model's weights


def weights_withdrawn(session: Session, run_id: int) -> str | None:
    """Why a run's weights are served to admins alone, or None: the run is an expert or router of a family version
    that was withdrawn (it trained on withdrawn images) and is not one of the experts its replacement kept."""
    run = session.get(Run, run_id)
    if run is None or run.group_id is None:
        return None
    for version in session.exec(select(ModelVersion).where(ModelVersion.withdrawn_at.is_not(None))):
        if not version.family or int(version.family.get("group_id", 0)) != run.group_id:
            continue
        replacement = session.get(ModelVersion, version.replaced_by_id) if version.replaced_by_id else None
        kept = {int(e["run_id"]) for e in (replacement.family or {}).get("experts", [])} if replacement else set()
        if run.id not in kept:
            return f"{version.name}@{version.version} was withdrawn ({version.withdrawn_reason})"
    return None


def open_artifact(session: Session, *, actor: User | None, store: ArchiveStore, run_id: int,
                  name: str) -> Artifact:
    if not can_download(session, actor, run_id):
        raise NotFound(f"no outputs of run {run_id} that you may read")
    artifact = find_artifact(session, run_id, name)
    if artifact is None:
        raise NotFound(f"run {run_id} has no output named {name!r}")
    if artifact.kind in WEIGHTS and not (actor is not None and actor.has(Role.admin)):
        withheld = weights_withdrawn(session, run_id)
        if withheld:
            raise Forbidden(f"{name} is withheld: {withheld}")
    if not store.exists(artifact.sha256):
        raise NotFound(f"{name} is recorded but missing from the archive; tell an operator")
    return artifact


# Raster images the portal shows in place, each with the bytes its files begin with. Anything else (SVG, HTML,
# text, a checkpoint) is served as an attachment, and so is a "PNG" whose bytes are not one.
INLINE_RASTER = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
                 "image/gif": (b"GIF87a", b"GIF89a")}
# Sent with every download: whatever a file holds, a browser runs none of it with the portal's rights.
DOWNLOAD_HEADERS = {"Content-Security-Policy": "default-src 'none'; sandbox", "X-Content-Type-Options": "nosniff"}


# An analysis report (self-contained HTML) is shown in place as a sandboxed document: it may show its inline styles
# and data: pictures, and nothing else; with no script allowed and an opaque origin, whatever it holds runs nothing.
REPORT_HEADERS = {"Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                                             "sandbox; frame-ancestors 'none'",
                  "X-Content-Type-Options": "nosniff"}


def served_as(artifact: Artifact, store: ArchiveStore) -> tuple[str, dict[str, str]]:
    """How a download is served: (disposition, headers)."""
    if artifact.kind == "report" and artifact.media_type.startswith("text/html"):
        return "inline", dict(REPORT_HEADERS)
    return ("inline" if shown_inline(artifact, store) else "attachment"), dict(DOWNLOAD_HEADERS)


def shown_inline(artifact: Artifact, store: ArchiveStore) -> bool:
    """Whether a browser may show this output in place: a raster type whose bytes really are that type."""
    signatures = INLINE_RASTER.get(artifact.media_type)
    if not signatures or artifact.size < 16:
        return False
    head = b"".join(store.open_range(artifact.sha256, 0, 15))
    return head.startswith(signatures)


def fetch_to(store: ArchiveStore, sha256: str, path: Path) -> Path:
    """An object copied whole into a file, in the store's chunks (for objects too big to hold in memory)."""
    with path.open("wb") as handle:
        for block in store.open_range(sha256):
            handle.write(block)
    return path


def read_object(store: ArchiveStore, sha256: str, limit: int = 64 << 20) -> bytes:
    """A small object's bytes (a metrics file, a log), at most `limit` of them."""
    return b"".join(store.open_range(sha256, 0, limit - 1))


def usable_checkpoints(session: Session, actor: User, limit: int = 100) -> list[tuple[str, str]]:
    """The checkpoints `actor` may sample from, newest first, as (sha256, a label naming the run and proposal): their
    own proposals' and those past their exclusive period (the same rule as downloads)."""
    mine = select(ProposalMember.proposal_id).where(ProposalMember.user_id == actor.id)
    rows = session.exec(
        select(Artifact.sha256, Run.id, Proposal.title).join(Run, Run.id == Artifact.run_id)
        .join(Proposal, Proposal.id == Run.proposal_id).join(Award, Award.id == Run.award_id)
        .where(Artifact.kind == "checkpoint", (Run.proposal_id.in_(mine)) | (Award.exclusive_until <= utcnow()))
        .order_by(Artifact.id.desc()).limit(limit)).all()
    return [(sha, f"run {run_id} · {title or '(untitled)'} · {sha[:12]}") for sha, run_id, title in rows]


def find_checkpoint(session: Session, sha256: str) -> Artifact | None:
    return session.exec(
        select(Artifact).where(Artifact.sha256 == sha256, Artifact.kind == "checkpoint").order_by(Artifact.id)
    ).first()
