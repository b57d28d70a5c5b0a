"""Families of experts as their members see them: every expert's and the router's state, progress and node."""

from __future__ import annotations

import json

from sqlmodel import Session, select

from service.archive.service import find_artifact, read_object
from service.archive.store import ArchiveStore
from service.datasets import partitions
from service.datasets.service import find
from service.errors import NotFound
from service.models import ModelVersion, Role, Run, RunGroup, RunState, User
from service.proposals.access import is_member
from service.runs.schemas import FamilyMember, FamilyPublic
from service.runs.service import describe


def get_visible(session: Session, *, actor: User, group_id: int, kind: str = "family") -> RunGroup:
    """A family (or a sweep) its proposal's members and admins may watch; 404 to anyone else."""
    group = session.get(RunGroup, group_id)
    if group is None or group.kind != kind or not (actor.has(Role.admin)
                                                   or is_member(session, actor, group.proposal_id)):
        raise NotFound(f"no {kind} {group_id}")
    return group


def runs_of(session: Session, group: RunGroup) -> list[Run]:
    return list(session.exec(select(Run).where(Run.group_id == group.id).order_by(Run.id)))


def router_metrics(session: Session, store: ArchiveStore, router: Run) -> dict:
    """The router's metrics.json once it has trained: its held-out accuracy by noise level and chance."""
    found = find_artifact(session, router.id, "metrics.json") if router.state == RunState.succeeded else None
    if found is None:
        return {}
    try:
        metrics = json.loads(read_object(store, found.sha256))
    except (ValueError, OSError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def describe_family(session: Session, group: RunGroup, store: ArchiveStore) -> FamilyPublic:
    version = find(session, group.dataset)
    try:
        sizes = partitions.find(session, group.partition).sizes
    except NotFound:
        sizes = [0] * group.k
    members, metrics, versions = [], {}, []
    for run in runs_of(session, group):
        if run.job_kind == "router":
            metrics = router_metrics(session, store, run)
            versions = [f"{v.name}@{v.version}" for v in session.exec(
                select(ModelVersion).where(ModelVersion.run_id == run.id).order_by(ModelVersion.id))]
        public = describe(session, run)
        cluster = run.job_plan.get("cluster") if run.job_kind == "train" else None
        members.append(FamilyMember(
            role="expert" if run.job_kind == "train" else "router", cluster=cluster,
            images=sizes[cluster] if cluster is not None and cluster < len(sizes) else version.images,
            node_name=public.attempts[-1].node_name if public.attempts else None, run=public))
    return FamilyPublic(id=group.id, award_id=group.award_id, proposal_id=group.proposal_id, k=group.k,
                        dataset=group.dataset, partition=group.partition, members=members,
                        progress=sum(m.run.progress for m in members) / max(1, len(members)),
                        gpu_seconds=sum(m.run.gpu_seconds for m in members), created_at=group.created_at,
                        router_accuracy=metrics.get("accuracy_by_noise_decile"), chance=metrics.get("chance"),
                        versions=versions)
