"""Withdrawn training images: recorded by an admin (by the image's sha256 or its Commons page id, with a reason),
and traced to the dataset versions that hold them and the model versions that trained on them, through each
version's attribution file (for a family: with the cluster, so the expert to retrain is named)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlmodel import Session, select

from service.archive.service import read_object
from service.archive.store import ArchiveStore
from service.audit.service import record
from service.datasets.partitions import manifest_records
from service.errors import Forbidden, Invalid, NotFound
from service.models import DatasetVersion, ModelVersion, Role, User, Withdrawal, WithdrawalReason

_attributions: dict[str, dict[str, int | None]] = {}  # attribution sha256 -> image sha256 -> cluster (immutable)


def trained_images(store: ArchiveStore, version: ModelVersion) -> dict[str, int | None]:
    """The images a model version trained on, by sha256, each with its expert's cluster (None for one model)."""
    found = _attributions.get(version.attribution_sha256)
    if found is None:
        data = json.loads(read_object(store, version.attribution_sha256, limit=1 << 30))
        found = {str(e.get("image_sha256")): e.get("cluster") for e in data.get("images", [])}
        _attributions[version.attribution_sha256] = found
    return found


def _find_image(session: Session, store: ArchiveStore, *, sha256: str | None,
                page_id: int | None) -> tuple[dict, list[DatasetVersion]]:
    """The image's manifest record and every registered dataset version that holds it."""
    holding, found = [], None
    for version in session.exec(select(DatasetVersion).order_by(DatasetVersion.id)):
        for entry in manifest_records(store, version):
            if (sha256 and entry.get("image_sha256") == sha256) or (page_id and entry.get("page_id") == page_id):
                found = found or entry
                holding.append(version)
                break
    if found is None:
        raise NotFound("no registered dataset version holds that image"
                       + (f" (sha256 {sha256})" if sha256 else f" (Commons page {page_id})"))
    return found, holding


def withdraw(session: Session, store: ArchiveStore, *, actor: User | None, reason: WithdrawalReason,
             sha256: str | None = None, page_id: int | None = None, note: str = "") -> Withdrawal:
    """Record that a training image is withdrawn (admins, or the operator's command line); the same image again
    returns the withdrawal already recorded."""
    if actor is not None and not actor.has(Role.admin):
        raise Forbidden("only admins record withdrawals")
    if (sha256 is None) == (page_id is None):
        raise Invalid("name the image by its sha256 or by its Commons page id")
    entry, _ = _find_image(session, store, sha256=sha256, page_id=page_id)
    image = str(entry["image_sha256"])
    existing = session.exec(select(Withdrawal).where(Withdrawal.image_sha256 == image)).first()
    if existing is not None:
        return existing
    withdrawal = Withdrawal(image_sha256=image, page_id=entry.get("page_id"), title=str(entry.get("title", ""))[:300],
                            reason=reason, note=note.strip()[:2_000], recorded_by=actor.id if actor else None)
    session.add(withdrawal)
    session.flush()
    record(session, actor, "image.withdraw", f"image:{image}", reason=str(reason))
    return withdrawal


@dataclass
class Affected:
    """A model version that trained on withdrawn images: which, and for a family the clusters that held them."""

    version: ModelVersion
    images: list[str] = field(default_factory=list)
    clusters: set[int] = field(default_factory=set)


def affected_versions(session: Session, store: ArchiveStore) -> list[Affected]:
    """Every model version not yet withdrawn that trained on a withdrawn image."""
    withdrawn = set(session.exec(select(Withdrawal.image_sha256)).all())
    out = []
    for version in session.exec(select(ModelVersion).where(ModelVersion.withdrawn_at.is_(None))
                                .order_by(ModelVersion.id)):
        seen = trained_images(store, version)
        hit = sorted(withdrawn & set(seen))
        if hit:
            out.append(Affected(version, hit, {seen[i] for i in hit if seen[i] is not None}))
    return out
