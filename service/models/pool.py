"""The pool as the scheduler last saw it: one row per Ray node, alive or gone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from service.timeutil import utcnow


class PoolNode(SQLModel, table=True):
    __tablename__ = "pool_nodes"

    node_id: str = Field(primary_key=True, max_length=64)
    address: str = Field(max_length=255)
    is_head: bool = False
    alive: bool = True
    resources: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    first_seen_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
