from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from service.models import MachineState
from service.types import text

MachineName = text(80, 1)
Reason = text(500)
HoursPerDay = Annotated[float, Field(gt=0, le=24, allow_inf_nan=False)]


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


class Measurement(BaseModel):
    """What `observatory pool join` measured on the machine itself."""

    gpu_model: Annotated[str, Field(max_length=120, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = None
    gpu_count: int = Field(0, ge=0, le=64)
    vram_gb: float = Field(0.0, ge=0, le=4096, allow_inf_nan=False)
    cuda_capability: Annotated[str, Field(max_length=10, pattern=r"^[0-9]{1,2}\.[0-9]{1,2}$")] | None = None
    cpus: int = Field(1, ge=1, le=4096)
    memory_gb: float = Field(0.0, ge=0, le=1 << 20, allow_inf_nan=False)
    release: Annotated[str, Field(max_length=40, pattern=r"^[A-Za-z0-9.+_-]+$")]


class MachineCreate(BaseModel):
    name: MachineName
    show_owner: bool = False
    # A volunteer's machine runs `observatory volunteer`: no admin's approval, no Ray, results validated.
    volunteer: bool = False


class MachineControls(BaseModel):
    """The owner's controls; fields left out are unchanged. `hours_per_day: null` with `clear_cap` lifts the cap."""

    paused: bool | None = None
    draining: bool | None = None
    hours_per_day: HoursPerDay | None = None
    clear_cap: bool = False
    show_owner: bool | None = None
    team: text(80) | None = None  # a volunteer's machine: the team its credit counts for ("" for none)


class MachineDecision(BaseModel):
    decision: Literal["approve", "reject", "revoke"]
    message: Reason = ""


class MachinePublic(BaseModel):
    """A machine as its owner and the admins see it."""

    id: int
    owner_id: int
    owner_name: str
    name: str
    state: MachineState
    paused: bool
    draining: bool
    hours_per_day: float | None
    show_owner: bool
    gpu_model: str | None
    gpu_count: int
    vram_gb: float
    cuda_capability: str | None
    cpus: int
    memory_gb: float
    release: str | None
    measured_at: datetime | None
    first_gpu_model: str | None = None
    gpu_flag: str = ""
    message: str
    created_at: datetime
    last_contact_at: datetime | None
    status: Literal["online", "busy", "offline"]
    labels: dict[str, str] = {}  # as Ray reports them while it is online
    hours_contributed: float = 0.0
    hours_today: float = 0.0
    runs_served: int = 0
    volunteer: bool = False  # a volunteer's agent: pulls validated work, never joins Ray
    trust: int = 0  # validated results in a row
    wrong_results: int = 0
    team: str = ""
    credit_hours: float = 0.0  # validated GPU-hours, scaled by GPU class
    units_validated: int = 0


class JoinTicket(BaseModel):
    machine_id: int
    token: str  # shown once; each request for it issues a new one
    command: str


class JoinGrant(BaseModel):
    """What a machine needs to join: the head's address, the pool's Ray token, and what to declare to Ray."""

    machine_id: int
    head_address: str
    ray_token: str
    labels: dict[str, str]
    num_gpus: int
    num_cpus: int
    release: str


class Orders(BaseModel):
    """What a joined machine should do now."""

    machine_id: int
    state: MachineState
    paused: bool
    draining: bool
    leave: bool
    message: str
    # Whether a run is still live on the machine: one told to leave waits for it to save its checkpoint first.
    busy: bool
    # A fingerprint of the pool's Ray token: when the operator rotates the token, joined machines see it change
    # and join again with the new one (which only approved machines are given).
    pool_token_id: str


class PublicMachine(BaseModel):
    gpu_model: str | None
    gpu_count: int
    vram_gb: float
    owner: str | None  # only when the owner chose to be named


class PublicPool(BaseModel):
    """The pool as anyone may see it: no addresses, no owner who asked not to be named."""

    nodes_online: int  # every node of the pool's Ray cluster that is alive: owners' machines and the observatory's
    machines_online: int  # of those, owners' approved machines
    gpus_online: int
    vram_gb_online: float
    cpus_online: float
    hours_this_week: float
    machines_registered: int
    named_owners: list[str]
    online: list[PublicMachine]
