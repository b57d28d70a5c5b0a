from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from service.models import RunState


class ArtifactPublic(BaseModel):
    name: str
    kind: str
    sha256: str
    size: int
    media_type: str
    url: str


class RunPublic(BaseModel):
    id: int
    proposal_id: int
    award_id: int
    job_kind: str
    state: RunState
    progress: float
    progress_detail: dict[str, Any]
    message: str
    gpus: int
    gpu_seconds: float
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
