"""Dataset versions: registered once from a finished ingest's folder, their files put in the archive by sha256.

A version is immutable and named two ways: `name@version` (versions count up per name) and its digest. Registering
the same digest again returns the version already registered; nothing is stored twice.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from service.archive.store import ArchiveStore
from service.audit.service import record
from service.errors import Invalid, NotFound
from service.models import DatasetVersion, User
from service.types import SLUG_PATTERN

NAME = re.compile(SLUG_PATTERN)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
FILES = ("manifest.jsonl", "attribution.txt", "rejected.jsonl", "duplicates.jsonl", "dataset.json")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise Invalid(f"name: {name!r} is not a dataset name (lower-case letters, digits and dashes)")
    return name


def register(session: Session, store: ArchiveStore, folder: Path, *, actor: User | None) -> tuple[DatasetVersion, bool]:
    """Register the dataset version written in `folder` (by `jobs.commons.ingest`); returns it, and whether it is
    new. Its files go into the archive first, so a registered version always has them."""
    described = json.loads((folder / "dataset.json").read_text())
    name, digest = check_name(described["name"]), described["digest"]
    if not DIGEST.match(digest):
        raise Invalid(f"digest: {digest!r} is not a sha256 digest")
    existing = session.exec(select(DatasetVersion).where(DatasetVersion.digest == digest)).first()
    if existing is not None:
        return existing, False
    files: dict[str, dict[str, Any]] = {}
    for file in [*FILES, *described["shards"]]:
        with (folder / file).open("rb") as stream:
            sha, size = store.put(stream)
        files[file] = {"sha256": sha, "size": size}
    latest = session.exec(select(func.max(DatasetVersion.version)).where(DatasetVersion.name == name)).one()
    version = DatasetVersion(
        name=name, version=(latest or 0) + 1, digest=digest, origin=described["origin"],
        images=described["images"], licenses=described["licenses"], rejected=described["rejected"],
        duplicates=described["duplicates"], source=described["source"], resolution=described["resolution"],
        files=files, created_by=actor.id if actor else None)
    session.add(version)
    session.flush()
    record(session, actor, "dataset.register", f"dataset:{version.id}", name=name, version=version.version,
           digest=digest, images=version.images)
    return version, True


def find(session: Session, ref: str) -> DatasetVersion:
    """A version named `name@version`, `name` (its latest) or `sha256:…`."""
    if ref.startswith("sha256:"):
        found = session.exec(select(DatasetVersion).where(DatasetVersion.digest == ref)).first()
    else:
        name, _, number = ref.partition("@")
        query = select(DatasetVersion).where(DatasetVersion.name == name)
        if number:
            if not number.isdigit() or len(number) > 9:
                raise NotFound(f"no dataset version {ref!r}")
            query = query.where(DatasetVersion.version == int(number))
        found = session.exec(query.order_by(DatasetVersion.version.desc())).first()
    if found is None:
        raise NotFound(f"no dataset version {ref!r}")
    return found


def listing(session: Session) -> list[DatasetVersion]:
    return list(session.exec(select(DatasetVersion).order_by(DatasetVersion.name, DatasetVersion.version.desc())))
