"""The shared model's versions and their cards: an admin registers a version from a succeeded train run, and its
card says what it was trained on, under which licenses, what that asks of its users, and what it cost.

A card's terms follow from its training data's licenses: attribution where a license requires it, and, for CC
BY-SA images, the question whether share-alike reaches the weights or the outputs, stated as open. Nothing here is
legal advice, and the card says so.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from jobs.commons.licenses import CC_BY, CC_BY_SA, classify
from service.archive import catalog
from service.archive.service import find_artifact, read_object
from service.archive.store import ArchiveStore
from service.audit.service import record
from service.datasets.service import by_digest
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.ledger.service import run_charged
from service.models import ModelVersion, Role, Run, RunState, User
from service.types import SLUG_PATTERN

NAME_PATTERN = SLUG_PATTERN


def needs_attribution(entry: dict) -> bool:
    if "attribution_required" in entry:
        return bool(entry["attribution_required"])
    family, *_ = classify(str(entry.get("license", "")))
    return family in (CC_BY, CC_BY_SA)


def data_terms(entries: list[dict]) -> dict[str, Any]:
    """What a version's card counts of its training images: how many, under which licenses, how many need
    attribution and how many are CC BY-SA."""
    return {"images": len(entries), "licenses": dict(Counter(str(e.get("license", "unknown")) for e in entries)),
            "attribution_required": sum(needs_attribution(e) for e in entries),
            "share_alike": sum(classify(str(e.get("license", "")))[0] == CC_BY_SA for e in entries)}


def next_number(session: Session, name: str) -> int:
    """The number the next version of model `name` takes."""
    latest = session.exec(select(func.max(ModelVersion.version)).where(ModelVersion.name == name)).one()
    return (latest or 0) + 1


def check_registrar(actor: User, name: str) -> None:
    """Only admins register versions, under a model name of lower-case letters, digits and dashes."""
    if not actor.has(Role.admin):
        raise Forbidden("only admins register model versions")
    if not re.match(NAME_PATTERN, name):
        raise Invalid(f"name: {name!r} is not a model name (lower-case letters, digits and dashes)")


# What a version is made from: a train run's diffusion model, or a descriptor run's copy descriptor.
WEIGHTS_FILE = {"train": "checkpoint.pt", "descriptor": "descriptor.pt"}


def is_descriptor(version: ModelVersion) -> bool:
    """A version of a learned copy descriptor, not of a diffusion model."""
    return version.config.get("kind") == "descriptor"


def register(session: Session, store: ArchiveStore, *, actor: User, run_id: int, name: str,
             notes: str = "") -> ModelVersion:
    """A new version of model `name` from a succeeded train run, or of a copy descriptor from a succeeded
    descriptor run (admins)."""
    check_registrar(actor, name)
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    if run.job_kind not in WEIGHTS_FILE or run.state != RunState.succeeded:
        raise Conflict(f"run {run_id} is a {run.state} {run.job_kind} run; a model version comes from a succeeded "
                       "train run (a copy descriptor's from a succeeded descriptor run)")
    if session.exec(select(ModelVersion).where(ModelVersion.run_id == run_id)).first():
        raise Conflict(f"run {run_id} is already registered as a model version")
    earlier = session.exec(select(ModelVersion).where(ModelVersion.name == name)).first()
    if earlier is not None and is_descriptor(earlier) != (run.job_kind == "descriptor"):
        raise Conflict(f"{name} holds {'copy descriptors' if is_descriptor(earlier) else 'diffusion models'}; "
                       f"register run {run_id} under another name")
    checkpoint = find_artifact(session, run_id, WEIGHTS_FILE[run.job_kind])
    attribution = find_artifact(session, run_id, "attribution.json")
    if checkpoint is None or attribution is None:
        raise Conflict(f"run {run_id} has no checkpoint or attribution file in the archive")
    data = json.loads(read_object(store, attribution.sha256))
    entries = list(data.get("images", []))
    parent = None
    if run.job_plan.get("base_model"):
        base_name, _, base_number = str(run.job_plan["base_model"]).partition("@")
        parent = find(session, base_name, int(base_number))
    version = ModelVersion(
        name=name, version=next_number(session, name), run_id=run_id, checkpoint_sha256=checkpoint.sha256,
        attribution_sha256=attribution.sha256, dataset=str(data.get("dataset", run.job_plan.get("dataset", ""))),
        dataset_digest=str(data.get("digest", "")), **data_terms(entries),
        config={"kind": run.job_kind, **{k: v for k, v in run.job_plan.items() if k != "withdrawn_images"}},
        steps=int(run.job_plan.get("steps", 0)), gpu_seconds=run_charged(session, run_id),
        parent_id=parent.id if parent else None, notes=notes.strip(), created_by=actor.id)
    session.add(version)
    session.flush()
    catalog.add_model(session, version)
    record(session, actor, "model.register", f"model:{version.id}", name=name, version=version.version,
           run=run_id)
    return version


def terms(version: ModelVersion) -> list[str]:
    """What the training data's licenses ask of the model's users, in plain words."""
    out = []
    if version.attribution_required:
        out.append(f"Attribution: {version.attribution_required} of the {version.images} training images are under "
                   "licenses that require crediting their authors; the attribution file lists every image with its "
                   "author and license.")
    else:
        out.append("No training image's license requires attribution; the attribution file credits every author "
                   "all the same.")
    if version.share_alike:
        out.append(f"Share-alike: {version.share_alike} training images are CC BY-SA. Whether share-alike reaches "
                   "a model's weights, or what it generates, is an open question; this card does not answer it.")
    out.append("This card describes the training data's licenses; it is not legal advice.")
    return out


def find(session: Session, name: str, number: int | None = None) -> ModelVersion:
    query = select(ModelVersion).where(ModelVersion.name == name)
    if number is not None:
        query = query.where(ModelVersion.version == number)
    found = session.exec(query.order_by(ModelVersion.version.desc())).first()
    if found is None:
        raise NotFound(f"no model version {name}{f'@{number}' if number is not None else ''}")
    return found


def listing(session: Session) -> list[ModelVersion]:
    return list(session.exec(select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version.desc())))


@dataclass(frozen=True)
class Lineage:
    """What a card says beyond the version's own row: the version it was fine-tuned from, and its dataset."""

    parent: str | None  # name@version
    dataset_origin: str  # where every training image came from, as its dataset version says
    classes: list[str]  # the classes a class-conditional model draws


def lineage(session: Session, version: ModelVersion) -> Lineage:
    parent = session.get(ModelVersion, version.parent_id) if version.parent_id else None
    dataset = by_digest(session, version.dataset_digest)
    conditional = version.config.get("conditioning") == "class"
    return Lineage(parent=f"{parent.name}@{parent.version}" if parent else None,
                   dataset_origin=dataset.origin if dataset else "unknown (the dataset version is not registered)",
                   classes=list(dataset.classes) if dataset and conditional else [])
