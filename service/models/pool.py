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


class PoolClaim(SQLModel, table=True):
    """Which Ray cluster a named pool is, and the scheduler driving it: two clusters may not share a name."""

    __tablename__ = "pools"

    name: str = Field(primary_key=True, max_length=64)
    head_address: str = Field(max_length=255)
    head_node_id: str = Field(max_length=64)
    scheduler_id: str = Field(max_length=64)
    heartbeat_at: datetime = Field(default_factory=utcnow)
