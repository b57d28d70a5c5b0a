"""A family of experts registered as one model version: its card lists each expert's cluster, data, licenses and
GPU-seconds, and the router's held-out accuracy; sampling it mixes the experts by the router's weights."""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

from sqlmodel import Session, select

from service.archive import catalog
from service.archive.service import find_artifact, read_object
from service.archive.store import ArchiveStore
from service.audit.service import record
from service.datasets.withdrawals import trained_images
from service.errors import Conflict, Forbidden, NotFound
from service.ledger.service import run_charged
from service.modelcards.service import check_registrar, data_terms, next_number
from service.models import ModelVersion, Role, Run, RunGroup, RunState, User, Withdrawal
from service.runs.service import family_runs
from service.timeutil import utcnow


def _artifact(session: Session, run: Run, name: str) -> str:
    found = find_artifact(session, run.id, name)
    if found is None:
        raise Conflict(f"run {run.id} has no {name} in the archive")
    return found.sha256


def register_family(session: Session, store: ArchiveStore, *, actor: User, group_id: int, name: str,
                    notes: str = "") -> ModelVersion:
    """A new version of model `name` from a family whose experts and router all succeeded (admins). A rebuild's
    family takes its experts that were kept from the version it replaces, and that version is withdrawn."""
    check_registrar(actor, name)
    group = session.get(RunGroup, group_id)
    if group is None or group.kind != "family":
        raise NotFound(f"no family {group_id}")
    runs = list(session.exec(select(Run).where(Run.group_id == group.id).order_by(Run.id)))
    kept = [session.get(Run, int(entry["run_id"])) for entry in group.kept.values()]
    experts = sorted([r for r in runs if r.job_kind == "train"] + kept, key=lambda r: int(r.job_plan["cluster"]))
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
                        "licenses": data_terms(entries)["licenses"],
                        "gpu_seconds": run_charged(session, run.id)})
    metrics = json.loads(read_object(store, _artifact(session, router, "metrics.json")))
    plan = dict(experts[0].job_plan)
    merged = {"dataset": group.dataset, "digest": plan.get("dataset_digest"), "partition": group.partition,
              "images": images}
    attribution_sha, _ = store.put(io.BytesIO(json.dumps(merged, indent=2, ensure_ascii=False).encode()))
    family: dict[str, Any] = {
        "group_id": group.id, "partition": group.partition, "k": group.k, "experts": members,
        "withdrawn_images": len(router.job_plan.get("withdrawn_images") or []),  # a count: no image named
        "router": {"run_id": router.id, "sha256": _artifact(session, router, "router.pt"),
                   "accuracy_by_noise_decile": metrics.get("accuracy_by_noise_decile", []),
                   "chance": metrics.get("chance"), "gpu_seconds": run_charged(session, router.id)}}
    version = ModelVersion(
        name=name, version=next_number(session, name), run_id=router.id, checkpoint_sha256=family["router"]["sha256"],
        attribution_sha256=attribution_sha, dataset=group.dataset, dataset_digest=str(plan.get("dataset_digest")),
        **data_terms(images), config={k: v for k, v in plan.items() if k not in ("cluster", "withdrawn_images")},
        steps=int(plan.get("steps", 0)),
        gpu_seconds=sum(m["gpu_seconds"] for m in members) + family["router"]["gpu_seconds"],
        notes=notes.strip(), created_by=actor.id, family=family)
    session.add(version)
    session.flush()
    catalog.add_model(session, version)
    record(session, actor, "model.register", f"model:{version.id}", name=name, version=version.version,
           family=group.id)
    if group.replaces_id is not None:
        _withdraw_replaced(session, actor, session.get(ModelVersion, group.replaces_id), version,
                           set(router.job_plan.get("withdrawn_images") or []))
    return version


def _withdraw_replaced(session: Session, actor: User, old: ModelVersion, new: ModelVersion, images: set[str]) -> None:
    """The replaced version is withdrawn: its card says why and what replaced it."""
    reasons = Counter(str(w.reason) for w in session.exec(
        select(Withdrawal).where(Withdrawal.image_sha256.in_(sorted(images)))).all())
    old.withdrawn_at = utcnow()
    catalog.withdraw_model(session, old)
    old.replaced_by_id = new.id
    old.withdrawn_reason = (f"it trained on {len(images)} withdrawn image(s)"
                            + (f" ({', '.join(f'{n} {r}' for r, n in sorted(reasons.items()))})" if reasons else "")
                            + f"; replaced by {new.name}@{new.version}")[:500]
    session.add(old)
    session.flush()
    record(session, actor, "model.withdraw", f"model:{old.id}", replaced_by=new.id)


def rebuild_family(session: Session, store: ArchiveStore, *, actor: User, version_id: int) -> RunGroup:
    """Rebuild a family version that trained on withdrawn images (admins): only the experts whose clusters held
    them are trained again, on their cluster without them and with the same seeds, and the router too; the other
    experts are kept. When the new runs have all succeeded, the new family is registered as the next version of
    the same name, and this one is withdrawn. Asking again while a rebuild runs returns it."""
    if not actor.has(Role.admin):
        raise Forbidden("only admins rebuild model versions")
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"no model version {version_id}")
    if not version.family:
        raise Conflict(f"{version.name}@{version.version} is one model, not a family: train it again with the "
                       "withdrawn images left out")
    if version.withdrawn_at is not None:
        raise Conflict(f"{version.name}@{version.version} is already withdrawn")
    running = session.exec(select(RunGroup).where(RunGroup.replaces_id == version.id)).first()
    if running is not None:
        return running
    seen = trained_images(store, version)
    withdrawn = sorted(set(session.exec(select(Withdrawal.image_sha256)).all()) & set(seen))
    if not withdrawn:
        raise Conflict(f"{version.name}@{version.version} trained on no withdrawn image")
    clusters = sorted({int(seen[image]) for image in withdrawn if seen[image] is not None})
    old = session.get(RunGroup, int(version.family["group_id"]))
    group = RunGroup(award_id=old.award_id, proposal_id=old.proposal_id, k=old.k, partition=old.partition,
                     dataset=old.dataset, replaces_id=version.id, requested_by=actor.id,
                     kept={str(e["cluster"]): e for e in version.family["experts"] if e["cluster"] not in clusters})
    session.add(group)
    session.flush()
    plan = {**version.config, "partition": old.partition}
    family_runs(session, group, plan, clusters, withdrawn)
    record(session, actor, "model.rebuild", f"model:{version.id}", family=group.id, clusters=clusters,
           withdrawn=len(withdrawn))
    return group


def finish_rebuild(session: Session, store: ArchiveStore, group_id: int) -> ModelVersion | None:
    """Register a rebuild whose runs have all succeeded (once), as the admin who asked for it; None otherwise."""
    group = session.get(RunGroup, group_id)
    if group is None or group.replaces_id is None:
        return None
    runs = session.exec(select(Run).where(Run.group_id == group.id)).all()
    if any(r.state != RunState.succeeded for r in runs):
        return None
    router = next(r for r in runs if r.job_kind == "router")
    if session.exec(select(ModelVersion).where(ModelVersion.run_id == router.id)).first() is not None:
        return None
    old = session.get(ModelVersion, group.replaces_id)
    return register_family(session, store, actor=session.get(User, group.requested_by), group_id=group.id,
                           name=old.name, notes=f"rebuilt from {old.name}@{old.version} without withdrawn images")
