"""Dataset versions: public to read and to download (every image in them is openly licensed, with its author and
license in the manifest and the attribution file)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from service.archive.catalog import dataset_ref
from service.archive.citations import Citation
from service.archive.ranges import ranged_response
from service.archive.service import DOWNLOAD_HEADERS, store_for
from service.datasets import partitions, service
from service.deps import SessionDep, SettingsDep
from service.errors import NotFound
from service.modelcards.publishing import dataset_citation
from service.models import DatasetPartition, DatasetVersion

router = APIRouter(tags=["datasets"])
Ref = Annotated[str, Path(max_length=120, pattern=r"^(sha256:[0-9a-f]{64}|[a-z0-9][a-z0-9-]{0,79}(@[0-9]{1,9})?)$",
                          description="name@version, name (its latest version) or sha256:…")]
FileName = Annotated[str, Path(max_length=40, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
MEDIA = {".tar": "application/x-tar", ".jsonl": "application/x-ndjson", ".json": "application/json",
         ".txt": "text/plain; charset=utf-8"}


class DatasetFile(BaseModel):
    name: str
    sha256: str
    size: int
    url: str


class DatasetPublic(BaseModel):
    ref: str
    name: str
    version: int
    digest: str
    origin: str
    images: int
    licenses: dict[str, int]
    rejected: dict[str, int]
    duplicates: int
    source: dict[str, Any]
    resolution: int
    classes: list[str]
    authors: list[str]
    run_id: int | None  # the ingest run that made it; None when registered from the command line
    files: list[DatasetFile]
    created_at: datetime
    identifier: str  # obs:dataset/NAME@N
    doi: str
    citation: Citation | None = None  # on one version (not in the listing)


def to_public(version: DatasetVersion) -> DatasetPublic:
    ref = f"{version.name}@{version.version}"
    files = [DatasetFile(name=name, sha256=f["sha256"], size=f["size"], url=f"/api/datasets/{ref}/files/{name}")
             for name, f in sorted(version.files.items())]
    return DatasetPublic(
        ref=ref, files=files, identifier=dataset_ref(version.name, version.version),
        **version.model_dump(include={"name", "version", "digest", "origin", "images", "licenses", "rejected",
                                      "duplicates", "source", "resolution", "classes", "authors", "run_id",
                                      "created_at", "doi"}))


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(session: SessionDep) -> list[DatasetPublic]:
    """Every registered dataset version, newest version of each name first. Public."""
    return [to_public(v) for v in service.listing(session)]


@router.get("/datasets/{ref}", response_model=DatasetPublic)
def get_dataset(ref: Ref, request: Request, session: SessionDep) -> DatasetPublic:
    """One dataset version: its digest, where its images came from, its licenses and files, and how to cite it.
    Public."""
    version = service.find(session, ref)
    return to_public(version).model_copy(update={"citation": dataset_citation(version, str(request.base_url))})


class ClusterPublic(BaseModel):
    cluster: int
    images: int
    licenses: dict[str, int]
    sheet_url: str  # a contact sheet of its first images


class PartitionPublic(BaseModel):
    """The version cut into `k` clusters (balanced k-means over the offline descriptor, seeded): a family of
    experts trains one expert per cluster. Its digest names it in a train plan (`partition`)."""

    id: int
    dataset: str
    digest: str
    k: int
    seed: int
    clusters: list[ClusterPublic]
    created_at: datetime


def partition_public(version: DatasetVersion, found: DatasetPartition) -> PartitionPublic:
    ref = f"{version.name}@{version.version}"
    clusters = [ClusterPublic(cluster=c, images=found.sizes[c], licenses=found.licenses[c],
                              sheet_url=f"/datasets/{ref}/partitions/{found.id}/clusters/{c}.png")
                for c in range(found.k)]
    return PartitionPublic(id=found.id, dataset=ref, digest=found.digest, k=found.k, seed=found.seed,
                           clusters=clusters, created_at=found.created_at)


@router.get("/datasets/{ref}/partitions", response_model=list[PartitionPublic])
def list_partitions(ref: Ref, session: SessionDep) -> list[PartitionPublic]:
    """The version's partitions into clusters, each with its clusters' sizes and licenses. Public."""
    version = service.find(session, ref)
    return [partition_public(version, found) for found in partitions.partitions_of(session, version)]


@dataclass
class _File:
    name: str
    sha256: str
    size: int
    media_type: str


@router.get("/datasets/{ref}/files/{name}")
def download_dataset_file(ref: Ref, name: FileName, request: Request, session: SessionDep,
                          settings: SettingsDep) -> Response:
    """Download one of a dataset version's files (a shard, the manifest, the attribution file…); supports byte
    ranges. Public."""
    version = service.find(session, ref)
    stored = version.files.get(name)
    if stored is None:
        raise NotFound(f"dataset {ref} has no file {name!r}")
    media = next((m for suffix, m in MEDIA.items() if name.endswith(suffix)), "application/octet-stream")
    return ranged_response(store_for(settings), _File(name, stored["sha256"], stored["size"], media),
                           request.headers.get("range"), "attachment",
                           {"X-Content-SHA256": stored["sha256"], **DOWNLOAD_HEADERS})
