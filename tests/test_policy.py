from scheduler.policy import QueuedRun, decide


def test_oldest_first_within_free_gpus_and_exhausted_awards_refused() -> None:
    queue = [QueuedRun(3, 1, 1), QueuedRun(1, 1, 1), QueuedRun(2, 2, 2), QueuedRun(4, 3, 1)]
    decision = decide(queue, {1: 100.0, 2: 100.0, 3: 0.0}, free_gpus=2)
    assert decision.dispatch == [1, 3]  # run 2 needs 2 GPUs and only 1 is left after run 1
    assert decision.refuse == {4: "the award has no GPU-hours left"}


def test_unknown_pool_size_leaves_queueing_to_ray() -> None:
    decision = decide([QueuedRun(1, 1, 4), QueuedRun(2, 1, 4)], {1: 1.0}, free_gpus=None)
    assert decision.dispatch == [1, 2] and decision.refuse == {}
