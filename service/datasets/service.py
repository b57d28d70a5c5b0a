"""Dataset versions: registered once from a finished ingest's folder, their files put in the archive by sha256.

A version is immutable and named two ways: `name@version` (versions count up per name) and its digest. Registering
the same digest again returns the version already registered; nothing is stored twice.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from jobs.data.bundled import package as bundled_package
from jobs.package import MANIFEST, open_plain_tar, read_images, verify
from service.archive import catalog
from service.archive.service import fetch_to, find_artifact
from service.archive.store import ArchiveStore
from service.audit.service import record
from service.errors import Invalid, NotFound
from service.models import DatasetVersion, Proposal, Run, User
from service.types import SLUG_PATTERN

NAME = re.compile(SLUG_PATTERN)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
FILES = ("manifest.jsonl", "attribution.txt", "rejected.jsonl", "duplicates.jsonl", "dataset.json")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise Invalid(f"name: {name!r} is not a dataset name (lower-case letters, digits and dashes)")
    return name


SHARD = re.compile(r"^shard-[0-9]{5}\.tar$")
MAX_PACKAGE_FILES = len(FILES) + 100_000  # the package's files: the side files and at most this many shards
MAX_DESCRIPTION_BYTES = 16 << 20  # dataset.json is read whole


def _described(folder: Path) -> dict[str, Any]:
    try:
        described = json.loads((folder / "dataset.json").read_text())
        if not isinstance(described, dict) or not isinstance(described.get("shards"), list):
            raise ValueError("dataset.json names no shards")
    except (OSError, ValueError) as exc:
        raise Invalid(f"the dataset package has no readable dataset.json ({exc})") from None
    bad = [str(shard) for shard in described["shards"] if not SHARD.match(str(shard))]
    missing = [file for file in [*FILES, *described["shards"]] if not (folder / str(file)).is_file()]
    if bad or missing:
        raise Invalid(f"the dataset package is incomplete: {', '.join(bad + missing)}")
    return described


@dataclass(frozen=True)
class CheckedPackage:
    """A dataset package that checked out, its files already in the archive: what registering it records."""

    name: str
    digest: str
    described: dict[str, Any]
    records: list[dict[str, Any]]
    files: dict[str, dict[str, Any]]  # file name -> {"sha256", "size"}


def check_package(store: ArchiveStore, folder: Path) -> CheckedPackage:
    """Verify the dataset package in `folder` (jobs.package) and put its files into the archive; no database.

    Nothing of dataset.json is taken on trust but its name, source and origin: the manifest must have the digest
    it states, every image must match its checksum, and the counts are made from the manifest. The files go into
    the archive first, so a registered version always has them (the archive keeps each content once)."""
    described = _described(folder)
    name = check_name(str(described.get("name", "")))
    try:
        digest, records = verify(folder / "manifest.jsonl", {s: folder / s for s in described["shards"]},
                                 str(described.get("digest", "")))
    except (ValueError, KeyError) as exc:
        raise Invalid(f"the dataset package does not check out: {exc}") from None
    if not records:
        raise Invalid("the dataset package holds no image: a dataset version of nothing is not registered")
    if not DIGEST.match(digest):
        raise Invalid(f"digest: {digest!r} is not a sha256 digest")
    files: dict[str, dict[str, Any]] = {}
    for file in [*FILES, *described["shards"]]:
        with (folder / file).open("rb") as stream:
            sha, size = store.put(stream)
        files[file] = {"sha256": sha, "size": size}
    return CheckedPackage(name, digest, described, records, files)


def record_package(session: Session, checked: CheckedPackage, *, actor: User | None,
                   run_id: int | None = None) -> tuple[DatasetVersion, bool]:
    """Register a checked package as the next version of its name (a few rows: quick inside any transaction);
    returns its version, and whether it is new (the same digest registered again is the version already there)."""
    existing = by_digest(session, checked.digest)
    if existing is not None:
        return existing, False
    described, records = checked.described, checked.records
    latest = session.exec(select(func.max(DatasetVersion.version)).where(DatasetVersion.name == checked.name)).one()
    version = DatasetVersion(
        name=checked.name, version=(latest or 0) + 1, digest=checked.digest,
        origin=str(described.get("origin", "unknown"))[:80], images=len(records),
        licenses=dict(Counter(str(r.get("license", "unknown")) for r in records)),
        rejected=dict(described.get("rejected") or {}), duplicates=int(described.get("duplicates") or 0),
        source=dict(described.get("source") or {}), resolution=int(described.get("resolution") or 0),
        classes=sorted({str(r["class"]) for r in records if r.get("class")}),
        authors=sorted({str(r["author"]) for r in records if r.get("author")}), files=dict(checked.files),
        created_by=actor.id if actor else None, run_id=run_id)
    session.add(version)
    session.flush()
    catalog.add_dataset(session, version)
    record(session, actor, "dataset.register", f"dataset:{version.id}", name=checked.name, version=version.version,
           digest=checked.digest, images=version.images, run=run_id)
    return version, True


def register(session: Session, store: ArchiveStore, folder: Path, *, actor: User | None,
             run_id: int | None = None) -> tuple[DatasetVersion, bool]:
    """Check the package in `folder` and register it (check_package, then record_package)."""
    return record_package(session, check_package(store, folder), actor=actor, run_id=run_id)


def images_of(store: ArchiveStore, version: DatasetVersion) -> list[tuple[dict[str, Any], bytes]]:
    """Every image of a version with its manifest record, in manifest order, checked against the version's digest
    and each image's sha256 as a job checks them."""
    with tempfile.TemporaryDirectory(prefix="dataset-") as tmp:
        local = {name: fetch_to(store, described["sha256"], Path(tmp) / name)
                 for name, described in version.files.items() if name == MANIFEST or name.endswith(".tar")}
        return read_images(local.pop(MANIFEST), local, version.digest)[1]


def check_run_package(store: ArchiveStore, run: Run, artifact_sha256: str | None) -> CheckedPackage:
    """The package an ingest run made: its `dataset.tar` (by sha256) unpacked, plain files with plain names only,
    checked against the name its plan gave; no database, so it may take as long as a big package takes.

    The tar comes from a pool node, so it is read as untrusted: compressed tars are refused (an uncompressed one
    holds no more than its own size), each member is checked (a plain file with a plain name, once) before it is
    copied out in blocks, and the number of members is bounded."""
    if artifact_sha256 is None:
        raise Invalid(f"run {run.id} has no dataset.tar in the archive")
    with tempfile.TemporaryDirectory(prefix="dataset-") as tmp:
        folder = Path(tmp)
        _unpack(fetch_to(store, artifact_sha256, folder / ".package.tar"), folder)
        described = _described(folder)
        if described.get("name") != run.job_plan.get("name"):
            raise Invalid(f"the package is named {described.get('name')!r}, not {run.job_plan.get('name')!r}")
        return check_package(store, folder)


def _unpack(package: Path, folder: Path) -> None:
    seen: set[str] = set()
    try:
        with open_plain_tar(package) as tar:
            for entry in tar:
                if not entry.isfile() or "/" in entry.name or entry.name.startswith(".") or entry.name in seen:
                    raise Invalid(f"dataset.tar holds {entry.name!r}, which is not a package file")
                seen.add(entry.name)
                if entry.name == "dataset.json" and entry.size > MAX_DESCRIPTION_BYTES:
                    raise Invalid(f"dataset.tar's dataset.json is {entry.size} bytes, over {MAX_DESCRIPTION_BYTES}")
                if len(seen) > MAX_PACKAGE_FILES:
                    raise Invalid(f"dataset.tar holds more than {MAX_PACKAGE_FILES} files")
                with tar.extractfile(entry) as source, (folder / entry.name).open("xb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
    except ValueError as exc:
        raise Invalid(f"dataset.tar: {exc}") from None
    except tarfile.TarError as exc:
        raise Invalid(f"dataset.tar is not a readable tar file ({exc})") from None


def register_from_run(session: Session, store: ArchiveStore, run: Run,
                      checked: CheckedPackage | None = None) -> DatasetVersion:
    """Register the dataset version an ingest run made, by the proposal's PI (checking its package here unless it
    was checked beforehand, outside the transaction)."""
    if checked is None:
        artifact = find_artifact(session, run.id, "dataset.tar")
        checked = check_run_package(store, run, artifact.sha256 if artifact else None)
    proposal = session.get(Proposal, run.proposal_id)
    version, _ = record_package(session, checked, actor=session.get(User, proposal.pi_id), run_id=run.id)
    return version


def by_digest(session: Session, digest: str) -> DatasetVersion | None:
    """The version with this digest (`sha256:…`), if one is registered."""
    return session.exec(select(DatasetVersion).where(DatasetVersion.digest == digest)).first()


def find(session: Session, ref: str) -> DatasetVersion:
    """A version named `name@version`, `name` (its latest) or `sha256:…`."""
    if ref.startswith("sha256:"):
        found = by_digest(session, ref)
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


def ensure_bundled(session: Session, store: ArchiveStore) -> DatasetVersion:
    """The bundled offline set, registered (once: the same bytes give the same digest) with its files in `store`;
    files missing from it (an archive moved to another store) are put back."""
    with tempfile.TemporaryDirectory(prefix="bundled-") as folder:
        package = bundled_package(Path(folder))
        version, new = register(session, store, package, actor=None)
        if not new:
            for name, stored in version.files.items():
                if not store.exists(stored["sha256"]):
                    with (package / name).open("rb") as stream:
                        store.put(stream)
    return version
