"""Submit, watch, stop and read the logs of runs as Ray jobs. The submission id is the idempotency key."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
from ray.job_submission import JobStatus, JobSubmissionClient

NODE_ID_LABEL = "ray.io/node-id"  # the label Ray gives every node: a job is pinned to the node chosen for it


class JobState(StrEnum):
    pending = "PENDING"
    running = "RUNNING"
    succeeded = "SUCCEEDED"
    failed = "FAILED"
    stopped = "STOPPED"
    unknown = "UNKNOWN"  # Ray has no record of it: the cluster was replaced


@dataclass(frozen=True)
class JobRequest:
    submission_id: str
    entrypoint: str
    num_cpus: float
    num_gpus: float
    metadata: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    py_modules: list[str] = field(default_factory=list)  # local package folders Ray ships to the node
    label_selector: dict[str, str] = field(default_factory=dict)  # the node labels the job must run on


@dataclass(frozen=True)
class JobSnapshot:
    state: JobState
    ended_at: datetime | None = None
    message: str = ""
    node_id: str | None = None  # the node the job's entrypoint ran on
    exit_code: int | None = None  # the entrypoint's exit code, when it ended by itself
    error_type: str | None = None  # Ray's reason for a failure (e.g. JOB_SUPERVISOR_ACTOR_DIED: its node died)


class RayBackend:
    def __init__(self, dashboard_url: str, token: str | None) -> None:
        self.dashboard_url = dashboard_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = JobSubmissionClient(dashboard_url, headers=self.headers or None)

    def submit(self, request: JobRequest) -> str:
        """Submit once: a second submission of the same id finds the first instead of starting another."""
        if self.state(request.submission_id) != JobState.unknown:
            return request.submission_id
        runtime_env: dict[str, Any] = {"env_vars": dict(request.env)}
        if request.py_modules:
            runtime_env["py_modules"] = list(request.py_modules)
        return self.client.submit_job(
            entrypoint=request.entrypoint,
            submission_id=request.submission_id,
            entrypoint_num_cpus=request.num_cpus,
            entrypoint_num_gpus=request.num_gpus or None,
            entrypoint_label_selector=dict(request.label_selector) or None,
            metadata=request.metadata,
            runtime_env=runtime_env,
        )

    def snapshot(self, submission_id: str) -> JobSnapshot:
        """State, end time and Ray's message in one request; `unknown` when Ray has no such job."""
        try:
            info = self.client.get_job_info(submission_id)
        except RuntimeError as exc:  # the SDK raises RuntimeError for a 404
            if "does not exist" in str(exc) or "404" in str(exc):
                return JobSnapshot(JobState.unknown)
            raise
        status = info.status
        ended = datetime.fromtimestamp(info.end_time / 1000, UTC) if info.end_time else None
        error_type = getattr(info, "error_type", None)
        return JobSnapshot(JobState(status.value if isinstance(status, JobStatus) else str(status)), ended,
                           info.message or "", getattr(info, "driver_node_id", None) or None,
                           getattr(info, "driver_exit_code", None),
                           str(getattr(error_type, "value", error_type)) if error_type else None)

    def state(self, submission_id: str) -> JobState:
        return self.snapshot(submission_id).state

    def logs(self, submission_id: str) -> str:
        """The whole log Ray kept: read once, when a job ended without reporting (the job sends its own)."""
        return self.client.get_job_logs(submission_id)

    def head_node_id(self) -> str:
        """The id of the cluster's head node: which Ray cluster this is."""
        heads = [n for n in self.nodes() if n.get("is_head_node") and n.get("state") == "ALIVE"]
        if not heads:
            raise RuntimeError(f"the Ray cluster at {self.dashboard_url} reports no live head node")
        return str(heads[0]["node_id"])

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes from Ray's state API: id, address, head or not, state, resources, labels."""
        response = httpx.get(f"{self.dashboard_url}/api/v0/nodes", params={"limit": 10_000, "detail": 1},
                             headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json()["data"]["result"]["result"]

    def stop(self, submission_id: str) -> None:
        self.client.stop_job(submission_id)
