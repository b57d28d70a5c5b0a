from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class NodeSeen(BaseModel):
    """One node as Ray reports it; what the scheduler hands to `record_nodes`."""

    node_id: str
    address: str
    is_head: bool
    alive: bool
    resources: dict[str, Any]
    labels: dict[str, Any] = {}


class NodePublic(NodeSeen):
    first_seen_at: datetime
    last_seen_at: datetime


class PoolSummary(BaseModel):
    nodes_alive: int
    gpus: float
    cpus: float
    last_seen_at: datetime | None
