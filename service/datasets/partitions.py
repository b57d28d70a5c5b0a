"""Partitions of dataset versions: recorded once a partition file (jobs.partition) checks out against the version,
its file put in the archive; looked up by digest when a plan trains one cluster of it."""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

from sqlmodel import Session, select

import jobs.partition as partitions
from service.archive.service import read_object
from service.archive.store import ArchiveStore
from service.audit.service import record
from service.errors import Invalid, NotFound
from service.models import DatasetPartition, DatasetVersion, User


def manifest_records(store: ArchiveStore, version: DatasetVersion) -> list[dict[str, Any]]:
    """The version's manifest records, in order."""
    text = read_object(store, version.files["manifest.jsonl"]["sha256"], limit=1 << 30).decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def register(session: Session, store: ArchiveStore, version: DatasetVersion, data: bytes,
             actor: User | None = None) -> DatasetPartition:
    """Record a partition of `version` from its file's bytes: it must be of this version's digest and assign
    every image of the version exactly once. The same partition again returns the one recorded."""
    try:
        made = partitions.read(data, version.digest)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    existing = session.exec(select(DatasetPartition).where(DatasetPartition.digest == made["digest"])).first()
    if existing is not None:
        return existing
    records = manifest_records(store, version)
    images = {str(r["image_sha256"]) for r in records}
    if set(made["assignment"]) != images:
        raise Invalid(f"the partition does not assign exactly the images of {version.name}@{version.version}")
    licenses: list[Counter[str]] = [Counter() for _ in range(made["k"])]
    for entry in records:
        licenses[made["assignment"][str(entry["image_sha256"])]][str(entry.get("license", "unknown"))] += 1
    sha, _ = store.put(io.BytesIO(data))
    found = DatasetPartition(dataset_id=version.id, k=made["k"], seed=made["seed"], digest=made["digest"],
                             file_sha256=sha, sizes=partitions.sizes(made),
                             licenses=[dict(sorted(c.items())) for c in licenses],
                             created_by=actor.id if actor else None)
    session.add(found)
    session.flush()
    record(session, actor, "dataset.partition", f"dataset:{version.id}", k=found.k, seed=found.seed,
           digest=found.digest)
    return found


def partitions_of(session: Session, version: DatasetVersion) -> list[DatasetPartition]:
    return list(session.exec(select(DatasetPartition).where(DatasetPartition.dataset_id == version.id)
                             .order_by(DatasetPartition.k, DatasetPartition.seed)))


def find(session: Session, digest: str) -> DatasetPartition:
    found = session.exec(select(DatasetPartition).where(DatasetPartition.digest == digest)).first()
    if found is None:
        raise NotFound(f"no partition {digest}")
    return found


def of_k(session: Session, version: DatasetVersion, k: int, seed: int) -> DatasetPartition | None:
    """The version's partition into `k` clusters with `seed`, if one is recorded."""
    return session.exec(select(DatasetPartition).where(DatasetPartition.dataset_id == version.id,
                                                       DatasetPartition.k == k, DatasetPartition.seed == seed)).first()


def of_version(session: Session, version: DatasetVersion, partition_id: int) -> DatasetPartition:
    found = session.get(DatasetPartition, partition_id)
    if found is None or found.dataset_id != version.id:
        raise NotFound(f"{version.name}@{version.version} has no partition {partition_id}")
    return found


def cluster_records(store: ArchiveStore, version: DatasetVersion, found: DatasetPartition,
                    cluster: int) -> list[dict[str, Any]]:
    """The manifest records of one cluster's images, in manifest order."""
    if not 0 <= cluster < found.k:
        raise NotFound(f"the partition has clusters 0 to {found.k - 1}")
    assignment = partitions.read(read_object(store, found.file_sha256, limit=1 << 30))["assignment"]
    return [r for r in manifest_records(store, version) if assignment.get(str(r["image_sha256"])) == cluster]
