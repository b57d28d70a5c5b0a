"""Which queued runs go to which node now: one pure pass over the whole queue and the pool, no database and no Ray.

Order: priority class (A, then B, then C), then fair share (the GPU-seconds an award has used ÷ those it was
awarded; the least served first), then the oldest run. Each run in that order goes to the node that fits it most
tightly: enough free GPUs and CPUs, and at least the GPU memory it needs, preferring the smallest card that
fits (big cards stay free for big work) and, for CPU work, machines without a GPU. Nodes that take no work
(paused, draining, revoked, over their owner's daily cap, unregistered) are never used. A run whose award has no
GPU-time left is refused; one that fits nowhere now waits, with the reason. A run trained by several nodes
together starts only when its `min_workers` nodes are free at once, and holds them for its other workers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

PRIORITY_RANK = {"A": 0, "B": 1, "C": 2}


@dataclass(frozen=True, slots=True)
class QueuedRun:
    run_id: int
    award_id: int
    priority: str = "B"
    gpus: int = 0
    cpus: float = 1.0
    vram_gb: float = 0.0  # per GPU
    nodes: int = 1  # nodes that must be free at once for it to start (a run trained by several nodes together)
    volunteer_ok: bool = False  # a volunteer's agent may take it (its kind allows unvetted machines)
    replica: bool = False  # another volunteer's copy of a unit already out: volunteers' agents only
    avoid: frozenset[int] = frozenset()  # machines that must not take it (their owner already has a copy)


@dataclass(frozen=True, slots=True)
class Share:
    """An award's standing: GPU-seconds awarded, used, and left."""

    awarded_s: float
    used_s: float
    left_s: float

    @property
    def ratio(self) -> float:
        return self.used_s / self.awarded_s if self.awarded_s > 0 else float("inf")


@dataclass(slots=True)
class NodeView:
    node_id: str  # Ray's node id: the job is pinned to it by its `ray.io/node-id` label
    free_gpus: float
    free_cpus: float
    vram_gb: float = 0.0  # per GPU; 0 for a machine without one
    machine_id: int | None = None
    blocked: str | None = None  # why it takes no work now; None: it does
    volunteer: bool = False  # a volunteer's agent: it takes only the kinds unvetted machines may run


@dataclass
class Decision:
    place: dict[int, str] = field(default_factory=dict)  # run id -> node id, in the order they were chosen
    refuse: dict[int, str] = field(default_factory=dict)  # run id -> why it can never run
    wait: dict[int, str] = field(default_factory=dict)  # run id -> why it waits


NO_GPU_LEFT = "the award has no GPU-hours left"


def order(queue: list[QueuedRun], shares: dict[int, Share]) -> list[QueuedRun]:
    """Priority class, then fair share, then age."""
    none = Share(0, 0, 0)
    return sorted(queue, key=lambda r: (PRIORITY_RANK.get(r.priority, 1), shares.get(r.award_id, none).ratio,
                                        r.run_id))


class _Free:
    """The open nodes grouped by GPU memory, so a run looks only at cards big enough for it."""

    def __init__(self, nodes: list[NodeView]) -> None:
        open_nodes = [n for n in nodes if n.blocked is None and (n.free_gpus > 0 or n.free_cpus > 0)]
        self.sizes = sorted({n.vram_gb for n in open_nodes})
        self.buckets: dict[float, list[NodeView]] = {size: [] for size in self.sizes}
        for node in sorted(open_nodes, key=lambda n: (n.vram_gb, n.free_gpus, n.free_cpus)):
            self.buckets[node.vram_gb].append(node)
        # The largest GPU memory among nodes that take work, busy or not (-1: none takes work).
        self.largest = max((n.vram_gb for n in nodes if n.blocked is None), default=-1.0)

    def count(self, run: QueuedRun) -> int:
        """How many open nodes could take `run` now."""
        need_vram = run.vram_gb if run.gpus else 0.0
        return sum(_fits(node, run) for size in self.sizes[bisect.bisect_left(self.sizes, need_vram):]
                   for node in self.buckets[size])

    def take(self, run: QueuedRun) -> NodeView | None:
        """The tightest open node for `run`, with its resources taken; None when none fits now."""
        need_vram = run.vram_gb if run.gpus else 0.0
        for size in self.sizes[bisect.bisect_left(self.sizes, need_vram):]:
            bucket = self.buckets[size]
            for i, node in enumerate(bucket):
                if _fits(node, run):
                    node.free_gpus -= run.gpus
                    node.free_cpus -= run.cpus
                    if node.free_gpus < 1 and node.free_cpus < 1:
                        del bucket[i]  # full: later runs skip it
                    return node
        return None


def _fits(node: NodeView, run: QueuedRun) -> bool:
    """Free resources for it, and a node it may go to: a volunteer's agent takes only what unvetted machines may
    run, a replica goes to volunteers alone, and never to a machine whose owner already has a copy."""
    if node.volunteer != run.replica and (run.replica or not run.volunteer_ok):
        return False
    if node.machine_id is not None and node.machine_id in run.avoid:
        return False
    return node.free_gpus >= run.gpus and node.free_cpus >= run.cpus


def decide(queue: list[QueuedRun], nodes: list[NodeView], shares: dict[int, Share]) -> Decision:
    """Place what fits, in order; refuse runs of exhausted awards; say why the rest wait."""
    decision = Decision()
    free = _Free(nodes)
    open_vram = free.largest
    failed: list[tuple[int, float, float, tuple]] = []  # shapes that found no node: anything as big waits too
    for run in order(queue, shares):
        share = shares.get(run.award_id)
        if not run.replica and (share is None or share.left_s <= 0):  # a copy of a unit out finishes what began
            decision.refuse[run.run_id] = NO_GPU_LEFT
            continue
        shape = (run.gpus, run.cpus, run.vram_gb if run.gpus else 0.0)
        where = (run.volunteer_ok, run.replica, run.avoid)  # where it may go: only a run as picky waits with it
        if any(shape[0] >= g and shape[1] >= c and shape[2] >= v and where == w for g, c, v, w in failed):
            decision.wait[run.run_id] = _why_waiting(run, open_vram)
            continue
        if run.nodes > 1 and free.count(run) < run.nodes:
            decision.wait[run.run_id] = f"waiting for {run.nodes} nodes free at once (its min_workers)"
            continue
        node = free.take(run)
        if node is None:
            failed.append((*shape, where))
            decision.wait[run.run_id] = _why_waiting(run, open_vram)
        else:
            decision.place[run.run_id] = node.node_id
            for _ in range(run.nodes - 1):  # held for the workers the scheduler adds to it in the same tick
                free.take(run)
    return decision


def _why_waiting(run: QueuedRun, open_vram: float) -> str:
    """Why a run waits, judged on every node that takes work (a busy one included)."""
    if open_vram < 0:
        return "waiting: no node that takes work is online"
    if run.gpus and run.vram_gb > open_vram:
        return f"waiting: no node online has {run.vram_gb:g} GB of GPU memory"
    what = f"{run.gpus} GPU{'s' if run.gpus > 1 else ''}" if run.gpus else f"{run.cpus:g} CPU"
    return f"waiting for a node with {what} free"
