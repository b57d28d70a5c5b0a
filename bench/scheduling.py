"""One scheduling pass over 10,000 queued runs and 1,000 nodes, on one core, against a naive pass in the same run.

The naive pass orders the queue the same way and scans every node for every run (first fit in size order); the
policy's pass groups nodes by GPU memory, drops full nodes, and skips runs shaped like one that already found no
room. Both place the same runs on the same nodes (checked here, and in tests/test_policy.py). The goal is a pass
under 50 ms. Usage: python bench/scheduling.py [runs] [nodes]
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.policy import NO_GPU_LEFT, Decision, NodeView, QueuedRun, Share, _why_waiting, decide, order  # noqa: E402

CARDS = [(8, 0.2), (11, 0.15), (12, 0.15), (16, 0.15), (24, 0.25), (48, 0.1)]  # GB of a consumer pool, by share


def naive_decide(queue: list[QueuedRun], nodes: list[NodeView], shares: dict[int, Share]) -> Decision:
    """The baseline: every run scans every node."""
    decision = Decision()
    ordered_nodes = sorted((n for n in nodes if n.blocked is None), key=lambda n: (n.vram_gb, n.free_gpus,
                                                                                    n.free_cpus))
    largest = max((n.vram_gb for n in ordered_nodes), default=-1.0)
    for run in order(queue, shares):
        share = shares.get(run.award_id)
        if share is None or share.left_s <= 0:
            decision.refuse[run.run_id] = NO_GPU_LEFT
            continue
        need = run.vram_gb if run.gpus else 0.0
        for node in ordered_nodes:
            if node.vram_gb >= need and node.free_gpus >= run.gpus and node.free_cpus >= run.cpus:
                node.free_gpus -= run.gpus
                node.free_cpus -= run.cpus
                decision.place[run.run_id] = node.node_id
                break
        else:
            decision.wait[run.run_id] = _why_waiting(run, largest)
    return decision


def pool(runs: int, nodes: int, seed: int = 1) -> tuple[list[QueuedRun], list[NodeView], dict[int, Share]]:
    rng = random.Random(seed)
    sizes, weights = zip(*CARDS, strict=True)
    views = []
    for i in range(nodes):
        blocked = "paused by its owner" if rng.random() < 0.05 else None
        views.append(NodeView(f"node-{i}", free_gpus=rng.choice([1, 1, 1, 2]), free_cpus=rng.choice([4, 8, 16]),
                              vram_gb=rng.choices(sizes, weights)[0], machine_id=i, blocked=blocked))
    awards = 400
    shares = {a: Share(36_000, rng.randint(0, 36_000), 0 if rng.random() < 0.02 else 36_000)
              for a in range(1, awards + 1)}
    queue = [QueuedRun(i, rng.randint(1, awards), rng.choices("ABC", (0.2, 0.6, 0.2))[0], gpus=1, cpus=2,
                       vram_gb=rng.choice([1.0, 2.0, 4.0, 6.0, 10.0, 14.0, 20.0, 30.0])) for i in range(1, runs + 1)]
    return queue, views, shares


def copy(nodes: list[NodeView]) -> list[NodeView]:
    return [NodeView(n.node_id, n.free_gpus, n.free_cpus, n.vram_gb, n.machine_id, n.blocked) for n in nodes]


def timed(fn, queue, nodes, shares, repeat: int) -> tuple[float, Decision]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        fresh = copy(nodes)
        start = time.perf_counter()
        result = fn(queue, fresh, shares)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    queue, views, shares = pool(runs, nodes)
    naive_ms, slow = timed(naive_decide, queue, views, shares, repeat=3)
    fast_ms, fast = timed(decide, queue, views, shares, repeat=15)
    assert fast.place == slow.place and set(fast.wait) == set(slow.wait), "the two passes disagree"
    print(f"{runs} queued runs, {nodes} nodes ({sum(n.blocked is None for n in views)} open), one core")
    print(f"placed {len(fast.place)}, waiting {len(fast.wait)}, refused {len(fast.refuse)} (both passes agree)")
    print(f"naive pass (every run scans every node): {naive_ms:.1f} ms")
    print(f"scheduling pass: {fast_ms:.1f} ms (median of 15; naive {naive_ms:.1f} ms, "
          f"{naive_ms / fast_ms:.1f}x; goal under 50 ms)")


if __name__ == "__main__":
    main()
