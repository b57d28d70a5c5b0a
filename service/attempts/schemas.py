"""What a job and the observatory say to each other over the attempt's channel."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.types import text


class JobHello(BaseModel):
    node_name: text(200) = Field(description="The node's host name, for the run page.")
    worker_version: text(50) = Field(description="The commons-observatory release installed on the node.")


class JobInput(BaseModel):
    field: str
    sha256: str
    size: int


class JobPlanOut(BaseModel):
    run_id: int
    attempt: int
    kind: str
    module: str
    config: dict[str, Any]
    inputs: list[JobInput]
    resume_sha256: str | None
    resume_step: int
    checkpoint_interval_s: float
    max_output_bytes: int


class LogChunk(BaseModel):
    offset: int = Field(ge=0, le=1 << 40)
    text: str = Field(max_length=256 << 10)
    progress: dict[str, Any] | None = None


class Control(BaseModel):
    """`stop` is set when the job should checkpoint and stop (a cancel, or the award used up)."""

    offset: int = 0
    stop: str | None = None


class Received(BaseModel):
    name: str
    sha256: str
    size: int


class JobEnd(BaseModel):
    exit_code: int = Field(ge=-255, le=255)
    stopped: bool = Field(False, description="The job stopped because it was asked to.")
    problems: list[text(500)] = Field(default_factory=list, max_length=50)
    ended_s_ago: float = Field(0, ge=0, le=7 * 86400, description=(
        "How long ago the job's own process ended: the time the runner then spent waiting for the observatory "
        "(an outage) is not charged."))
