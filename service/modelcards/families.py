"""A family of experts registered as one model version: its card lists each expert's cluster, data, licenses and
GPU-seconds, and the router's held-out accuracy; sampling it mixes the experts by the router's weights."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from jobs.commons.licenses import CC_BY_SA, classify
from service.archive.service import find_artifact, read_object
from service.archive.store import ArchiveStore
from service.audit.service import record
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.ledger.service import run_charged
from service.modelcards.service import NAME_PATTERN, needs_attribution
from service.models import ModelVersion, Role, Run, RunGroup, RunState, User


def _artifact(session: Session, run: Run, name: str) -> str:
    found = find_artifact(session, run.id, name)
    if found is None:
        raise Conflict(f"run {run.id} has no {name} in the archive")
    return found.sha256


def register_family(session: Session, store: ArchiveStore, *, actor: User, group_id: int, name: str,
                    notes: str = "") -> ModelVersion:
    """A new version of model `name` from a family whose experts and router all succeeded (admins)."""
    if not actor.has(Role.admin):
        raise Forbidden("only admins register model versions")
    if not re.match(NAME_PATTERN, name):
        raise Invalid(f"name: {name!r} is not a model name (lower-case letters, digits and dashes)")
    group = session.get(RunGroup, group_id)
    if group is None:
        raise NotFound(f"no family {group_id}")
    runs = list(session.exec(select(Run).where(Run.group_id == group.id).order_by(Run.id)))
    experts = sorted((r for r in runs if r.job_kind == "train"), key=lambda r: int(r.job_plan["cluster"]))
    routers = [r for r in runs if r.job_kind == "router"]
    unfinished = [f"run {r.id} is {r.state}" for r in runs if r.state != RunState.succeeded]
    if unfinished or len(experts) != group.k or len(routers) != 1:
        raise Conflict(f"family {group_id} is not done: " + ("; ".join(unfinished) or "a member is missing"))
    router = routers[0]
    if session.exec(select(ModelVersion).where(ModelVersion.run_id == router.id)).first():
        raise Conflict(f"family {group_id} is already registered as a model version")
    members, images = [], []
    for run in experts:
        attribution = json.loads(read_object(store, _artifact(session, run, "attribution.json")))
        entries = [{**entry, "cluster": run.job_plan["cluster"]} for entry in attribution.get("images", [])]
        images += entries
        members.append({"cluster": run.job_plan["cluster"], "run_id": run.id, "images": len(entries),
                        "checkpoint_sha256": _artifact(session, run, "checkpoint.pt"),
                        "licenses": dict(Counter(str(e.get("license", "unknown")) for e in entries)),
                        "gpu_seconds": run_charged(session, run.id)})
    metrics = json.loads(read_object(store, _artifact(session, router, "metrics.json")))
    plan = dict(experts[0].job_plan)
    merged = {"dataset": group.dataset, "digest": plan.get("dataset_digest"), "partition": group.partition,
              "images": images}
    attribution_sha, _ = store.put(io.BytesIO(json.dumps(merged, indent=2, ensure_ascii=False).encode()))
    family: dict[str, Any] = {
        "group_id": group.id, "partition": group.partition, "k": group.k, "experts": members,
        "router": {"run_id": router.id, "sha256": _artifact(session, router, "router.pt"),
                   "accuracy_by_noise_decile": metrics.get("accuracy_by_noise_decile", []),
                   "chance": metrics.get("chance"), "gpu_seconds": run_charged(session, router.id)}}
    latest = session.exec(select(func.max(ModelVersion.version)).where(ModelVersion.name == name)).one()
    version = ModelVersion(
        name=name, version=(latest or 0) + 1, run_id=router.id, checkpoint_sha256=family["router"]["sha256"],
        attribution_sha256=attribution_sha, dataset=group.dataset, dataset_digest=str(plan.get("dataset_digest")),
        images=len(images), licenses=dict(Counter(str(e.get("license", "unknown")) for e in images)),
        attribution_required=sum(needs_attribution(e) for e in images),
        share_alike=sum(classify(str(e.get("license", "")))[0] == CC_BY_SA for e in images),
        config={k: v for k, v in plan.items() if k != "cluster"}, steps=int(plan.get("steps", 0)),
        gpu_seconds=sum(m["gpu_seconds"] for m in members) + family["router"]["gpu_seconds"],
        notes=notes.strip(), created_by=actor.id, family=family)
    session.add(version)
    session.flush()
    record(session, actor, "model.register", f"model:{version.id}", name=name, version=version.version,
           family=group.id)
    return version
