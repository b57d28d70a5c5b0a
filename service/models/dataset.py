"""Registered dataset versions: what a job may train on, named `name@version` or by digest."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.timeutil import utcnow


class DatasetVersion(SQLModel, table=True):
    """One immutable version: its files are in the archive by sha256, its digest names its contents."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_dataset_name_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=80, index=True)
    version: int
    digest: str = Field(max_length=80, unique=True)
    origin: str = Field(max_length=80)  # where every image came from, e.g. "Wikimedia Commons"
    images: int
    licenses: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    rejected: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    duplicates: int = 0
    source: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    resolution: int
    classes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    # every author named in the manifest, as written there: what a run may leave out with `exclude_authors`
    authors: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    # file name -> {"sha256": …, "size": …}: the shards, manifest.jsonl, attribution.txt, rejected.jsonl, …
    files: dict[str, dict[str, Any]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_by: int | None = Field(default=None, foreign_key="users.id")  # None: the operator's command line
    run_id: int | None = Field(default=None, foreign_key="runs.id")  # the ingest run that made it, if one did
    doi: str = Field(default="", max_length=200)  # a DOI an operator registered for it ("" for none)
    created_at: datetime = Field(default_factory=utcnow)


class DatasetPartition(SQLModel, table=True):
    """A dataset version cut into K clusters (jobs.partition), for a family of experts: its file is in the archive
    by sha256, and its digest (over the dataset's digest, K, the seed and the assignment) names it."""

    __tablename__ = "dataset_partitions"
    __table_args__ = (UniqueConstraint("dataset_id", "k", "seed", name="uq_partition_dataset_k_seed"),)

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset_versions.id", index=True)
    k: int
    seed: int
    digest: str = Field(max_length=80, unique=True)
    file_sha256: str = Field(max_length=64)
    sizes: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # per cluster: license -> number of images
    licenses: list[dict[str, int]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_by: int | None = Field(default=None, foreign_key="users.id")  # None: the operator's command line
    created_at: datetime = Field(default_factory=utcnow)
