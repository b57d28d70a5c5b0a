"""The placement policy alone: priority, fair share, GPU memory, blocked nodes, and why runs wait."""

from scheduler.policy import NO_GPU_LEFT, NodeView, QueuedRun, Share, decide

PLENTY = Share(awarded_s=36_000, used_s=0, left_s=36_000)


def gpu_run(run_id: int, award_id: int = 1, priority: str = "B", vram: float = 4.0, gpus: int = 1) -> QueuedRun:
    return QueuedRun(run_id, award_id, priority, gpus=gpus, cpus=0, vram_gb=vram)


def card(node_id: str, vram: float, gpus: int = 1, blocked: str | None = None) -> NodeView:
    return NodeView(node_id, free_gpus=gpus, free_cpus=8, vram_gb=vram, machine_id=1, blocked=blocked)


def test_priority_class_goes_first_whatever_the_age() -> None:
    queue = [gpu_run(1, priority="C"), gpu_run(2, priority="B"), gpu_run(3, priority="A")]
    decision = decide(queue, [card("n1", 24)], {1: PLENTY})
    assert decision.place == {3: "n1"}
    assert set(decision.wait) == {1, 2}


def test_within_a_class_the_least_served_award_goes_first() -> None:
    shares = {1: Share(36_000, 30_000, 6_000), 2: Share(36_000, 1_000, 35_000), 3: Share(3_600, 1_800, 1_800)}
    queue = [gpu_run(1, award_id=1), gpu_run(2, award_id=3), gpu_run(3, award_id=2)]
    decision = decide(queue, [card("a", 24), card("b", 24)], shares)
    assert list(decision.place) == [3, 2]  # award 2 used 3%, award 3 half, award 1 83%
    assert list(decision.wait) == [1]


def test_oldest_first_when_all_else_is_equal() -> None:
    decision = decide([gpu_run(5), gpu_run(2), gpu_run(9)], [card("a", 24)], {1: PLENTY})
    assert decision.place == {2: "a"}


def test_each_run_gets_the_smallest_card_that_fits() -> None:
    nodes = [card("big", 48), card("mid", 24), card("small", 11)]
    queue = [gpu_run(1, vram=20), gpu_run(2, vram=30), gpu_run(3, vram=8), gpu_run(4, vram=8)]
    decision = decide(queue, nodes, {1: PLENTY})
    assert decision.place == {1: "mid", 2: "big", 3: "small"}
    assert decision.wait == {4: "waiting for a node with 1 GPU free"}


def test_a_run_needing_more_memory_than_any_card_says_so() -> None:
    decision = decide([gpu_run(1, vram=80)], [card("a", 24)], {1: PLENTY})
    assert decision.wait == {1: "waiting: no node online has 80 GB of GPU memory"}


def test_blocked_nodes_get_nothing() -> None:
    nodes = [card("paused", 24, blocked="machine 1 is paused by its owner"),
             card("revoked", 24, blocked="machine 2 is revoked"),
             card("draining", 24, blocked="machine 3 is draining"),
             card("capped", 24, blocked="machine 4 ran its 2 hours today")]
    decision = decide([gpu_run(1)], nodes, {1: PLENTY})
    assert decision.place == {}
    assert decision.wait == {1: "waiting: no node that takes work is online"}
    nodes.append(card("open", 24))
    assert decide([gpu_run(1)], nodes, {1: PLENTY}).place == {1: "open"}


def test_multi_gpu_nodes_take_several_runs_and_no_more() -> None:
    decision = decide([gpu_run(i) for i in range(1, 5)], [card("quad", 24, gpus=3)], {1: PLENTY})
    assert decision.place == {1: "quad", 2: "quad", 3: "quad"} and list(decision.wait) == [4]
    two = decide([gpu_run(1, gpus=2), gpu_run(2)], [card("a", 24, gpus=1), card("b", 24, gpus=2)], {1: PLENTY})
    assert two.place == {1: "b", 2: "a"}


def test_cpu_work_prefers_machines_without_a_gpu() -> None:
    nodes = [card("gpu", 24), NodeView("cpu-only", free_gpus=0, free_cpus=2)]
    queue = [QueuedRun(1, 1, cpus=1), QueuedRun(2, 1, cpus=1), QueuedRun(3, 1, cpus=1)]
    decision = decide(queue, nodes, {1: PLENTY})
    assert decision.place == {1: "cpu-only", 2: "cpu-only", 3: "gpu"}


def test_runs_of_exhausted_or_unknown_awards_are_refused() -> None:
    shares = {1: PLENTY, 2: Share(3_600, 3_600, 0)}
    decision = decide([gpu_run(1, award_id=2), gpu_run(2, award_id=1), gpu_run(3, award_id=9)],
                      [card("a", 24)], shares)
    assert decision.refuse == {1: NO_GPU_LEFT, 3: NO_GPU_LEFT}
    assert decision.place == {2: "a"}


def test_a_pass_over_a_large_queue_matches_a_naive_scan() -> None:
    """The bucketed pass places exactly what a full scan of every node for every run places."""
    import random

    rng = random.Random(7)
    sizes = [8, 11, 12, 16, 24, 48]
    nodes = [card(f"n{i}", rng.choice(sizes), gpus=rng.choice([1, 1, 2]),
                  blocked="paused" if rng.random() < 0.1 else None) for i in range(60)]
    queue = [gpu_run(i, award_id=rng.randint(1, 5), priority=rng.choice("ABC"), vram=rng.choice([2, 6, 10, 20, 40]))
             for i in range(1, 400)]
    shares = {a: Share(36_000, rng.randint(0, 30_000), 6_000) for a in range(1, 6)}
    fast = decide(queue, [NodeView(**{f: getattr(n, f) for f in n.__slots__}) for n in nodes], shares)
    from bench.scheduling import naive_decide

    slow = naive_decide(queue, [NodeView(**{f: getattr(n, f) for f in n.__slots__}) for n in nodes], shares)
    assert fast.place == slow.place
    assert set(fast.wait) == set(slow.wait)


def test_a_run_trained_by_several_nodes_starts_only_when_its_min_workers_are_free_at_once() -> None:
    together = QueuedRun(1, 1, gpus=1, cpus=0, vram_gb=4, nodes=2)
    waiting = decide([together], [card("a", 24), card("b", 24, blocked="paused")], {1: PLENTY})
    assert waiting.place == {} and "2 nodes free at once" in waiting.wait[1]
    placed = decide([together, gpu_run(2)], [card("a", 24), card("b", 8)], {1: PLENTY})
    assert placed.place == {1: "b"} and 2 in placed.wait  # its second node is held for the worker added at once


def test_a_busy_node_is_online_and_the_run_waits_for_it_to_free() -> None:
    # The only node that takes work is online but full: the run waits for it, not for a node to come online.
    busy = NodeView("only", free_gpus=0, free_cpus=0, vram_gb=0.0, machine_id=None)
    decision = decide([QueuedRun(1, 1, "B", gpus=0, cpus=1, vram_gb=0.0)], [busy], {1: PLENTY})
    assert decision.place == {} and decision.wait == {1: "waiting for a node with 1 CPU free"}
    full_card = NodeView("card", free_gpus=0, free_cpus=8, vram_gb=24, machine_id=1)
    assert decide([gpu_run(2)], [full_card], {1: PLENTY}).wait == {2: "waiting for a node with 1 GPU free"}
    assert decide([gpu_run(3, vram=40)], [full_card], {1: PLENTY}).wait == {
        3: "waiting: no node online has 40 GB of GPU memory"}


def agent(node_id: str, machine_id: int, vram: float = 8.0) -> NodeView:
    return NodeView(node_id, free_gpus=1, free_cpus=4, vram_gb=vram, machine_id=machine_id, volunteer=True)


def test_a_volunteers_agent_takes_only_what_unvetted_machines_may_run() -> None:
    train, sample = gpu_run(1), QueuedRun(2, 1, gpus=1, cpus=0, vram_gb=1.0, volunteer_ok=True)
    decision = decide([train, sample], [agent("agent-7", 7)], {1: PLENTY})
    assert decision.place == {2: "agent-7"} and 1 in decision.wait
    # A vetted node takes either; the policy's order decides which goes where.
    decision = decide([train, sample], [agent("agent-7", 7), card("ray", 24)], {1: PLENTY})
    assert decision.place == {1: "ray", 2: "agent-7"}


def test_a_copy_goes_to_another_owners_agent_and_never_to_a_vetted_node() -> None:
    copy = QueuedRun(5, 1, gpus=1, cpus=0, vram_gb=1.0, volunteer_ok=True, replica=True, avoid=frozenset({7}))
    assert decide([copy], [agent("agent-7", 7), card("ray", 24)], {1: PLENTY}).place == {}
    assert decide([copy], [agent("agent-7", 7), agent("agent-8", 8)], {1: PLENTY}).place == {5: "agent-8"}
    # A copy of a unit already out is placed even when the award has nothing left: it finishes what began.
    spent = {1: Share(3_600, 3_600, 0)}
    assert decide([copy], [agent("agent-8", 8)], spent).place == {5: "agent-8"}
    paused = agent("agent-8", 8)
    paused.blocked = "machine 8 is paused by its owner"
    assert decide([copy], [paused], {1: PLENTY}).place == {}
