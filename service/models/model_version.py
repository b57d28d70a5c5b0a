"""Registered versions of the shared model: each made from one succeeded train run, named `name@version`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.timeutil import utcnow


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_name_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=80, index=True)
    version: int
    run_id: int = Field(foreign_key="runs.id", unique=True)
    checkpoint_sha256: str = Field(max_length=64)
    attribution_sha256: str = Field(max_length=64)
    dataset: str = Field(max_length=120)
    dataset_digest: str = Field(max_length=80)
    images: int
    licenses: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attribution_required: int = 0  # images whose license requires crediting the author
    share_alike: int = 0  # images under CC BY-SA
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    steps: int
    gpu_seconds: int
    parent_id: int | None = Field(default=None, foreign_key="model_versions.id")
    notes: str = Field(default="", max_length=5_000)
    # A family of experts (None: one model): the partition, each expert's cluster, run, checkpoint, images,
    # licenses and GPU-seconds, and the router's run, file and held-out accuracy. `run_id` is then the router's
    # run, `checkpoint_sha256` the router's file, and the attribution file lists every expert's images.
    family: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Set when it trained on a withdrawn image: its weights are then served to admins alone, and its card says why
    # and what replaced it.
    withdrawn_at: datetime | None = None
    withdrawn_reason: str = Field(default="", max_length=500)
    replaced_by_id: int | None = Field(default=None, foreign_key="model_versions.id")
    created_by: int = Field(foreign_key="users.id")
    doi: str = Field(default="", max_length=200)  # a DOI an operator registered for it ("" for none)
    created_at: datetime = Field(default_factory=utcnow)
