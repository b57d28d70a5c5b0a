"""Re-running a segment of a training (jobs.segment): honest states land on the re-run to the bit on one kind of
processor; a state that skipped steps, or one relabelled with a later step, does not."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from jobs.config import SegmentCheckConfig, TrainConfig
from jobs.kinds import SEGMENT_FROM, SEGMENT_TO
from jobs.segment import check
from jobs.train import build_trainer
from jobs.train import main as train_main
from service.models import RunAttempt
from service.volunteers import segments
from tests.factories import TINY_TRAIN

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, dict[str, Path]]:
    """A 12-step training's states at steps 4 and 8, its final checkpoint, and two forgeries."""
    folder = tmp_path_factory.mktemp("states")
    cfg = TrainConfig(**{**TINY_TRAIN, "steps": 12, "checkpoint_every": 1000, "ema_decay": 0.9})
    trainer = build_trainer(cfg, CPU)
    paths = {name: folder / f"{name}.pt" for name in ("s4", "s8", "skipped8", "relabelled8")}
    for _ in range(4):
        trainer.step_once()
    trainer.save(paths["s4"])
    trainer.step = 8  # a forgery: the state at step 4, said to be at step 8
    trainer.save(paths["relabelled8"])
    trainer.restore(paths["s4"])
    for _ in range(2):  # a cheat: two steps done where four are claimed
        trainer.step_once()
    trainer.step = 8
    trainer.save(paths["skipped8"])
    trainer.restore(paths["s4"])
    for _ in range(4):
        trainer.step_once()
    trainer.save(paths["s8"])
    final = folder / "final"
    final.mkdir()
    shutil.copyfile(paths["s8"], final / "state.pt")
    train_main(cfg, final)  # resumes at step 8 and writes the checkpoint (of the weight average)
    paths["checkpoint"] = final / "checkpoint.pt"
    return cfg, paths


def _check(cfg: TrainConfig, start: Path | None, end: Path, from_step: int, to_step: int,
           target: str = "state") -> dict:
    inputs = {SEGMENT_TO: end, **({SEGMENT_FROM: start} if start else {})}
    return check(SegmentCheckConfig(train=cfg, from_step=from_step, to_step=to_step, target=target), inputs, CPU)


def test_honest_segments_land_exactly(states) -> None:  # noqa: ANN001
    cfg, paths = states
    for start, end, a, b, target in [(None, paths["s4"], 0, 4, "state"), (paths["s4"], paths["s8"], 4, 8, "state"),
                                     (paths["s8"], paths["checkpoint"], 8, 12, "checkpoint")]:
        result = _check(cfg, start, end, a, b, target)
        assert result["lands"] and result["off"] == 0.0 and result["moved"] > 0, result


def test_a_state_that_skipped_steps_or_was_relabelled_does_not_land(states) -> None:  # noqa: ANN001
    cfg, paths = states
    skipped = _check(cfg, paths["s4"], paths["skipped8"], 4, 8)
    assert not skipped["lands"] and skipped["off_share"] > 0.1, skipped  # far off: not float noise
    relabelled = _check(cfg, paths["s4"], paths["relabelled8"], 4, 8)
    assert not relabelled["lands"] and relabelled["off_share"] is None  # it moved nowhere at all
    # The final checkpoint from a state it did not come from (the segment does not lead there), and from its own.
    assert not _check(cfg, paths["skipped8"], paths["checkpoint"], 8, 12, "checkpoint")["lands"]
    assert _check(cfg, paths["s4"], paths["checkpoint"], 4, 12, "checkpoint")["lands"]
    # A state that says another step than it was shipped as, or that is not a state at all.
    said = _check(cfg, paths["s4"], paths["s8"], 4, 9)
    assert not said["lands"] and "say they are at 4 and 8" in said["why"]
    garbage = paths["s4"].with_name("garbage.pt")
    garbage.write_bytes(b"not a state")
    assert "cannot be read" in _check(cfg, paths["s4"], garbage, 4, 8)["why"]


def test_the_segments_chosen_are_the_last_and_one_other() -> None:
    attempt = RunAttempt(run_id=1, number=3, pool="volunteers", submission_id="x",
                         held_outputs={"checkpoint.pt": {"sha256": "f" * 64, "size": 1}})
    for step in (40, 10, 30, 20, 50, 50):
        segments.hold(attempt, step, f"{step:064d}", 1)
    assert [entry[0] for entry in attempt.held_checkpoints] == [10, 20, 30, 40, 50]
    chosen = segments.choose(attempt, 50, random.Random(4))
    assert len(chosen) == 2
    assert chosen[-1] == {"from_step": 40, "from_sha256": f"{40:064d}", "to_step": 50, "to_sha256": "f" * 64,
                          "target": "checkpoint", "copies": 2}  # the state at the last step is not a point
    assert chosen[0]["to_step"] <= 40 and chosen[0]["target"] == "state"
    firsts = {segments.choose(attempt, 50, random.Random(seed))[0]["from_step"] for seed in range(40)}
    assert firsts == {0, 10, 20, 30}  # every earlier segment may be chosen, the one from the seed too
    assert segments.choose(RunAttempt(run_id=1, number=1, pool="volunteers", submission_id="y"), 50) == [
        {"from_step": 0, "from_sha256": None, "to_step": 50, "to_sha256": None, "target": "checkpoint", "copies": 2}]
    for step in range(1, 400):
        segments.hold(attempt, step, f"{step:064d}", 1)
    assert len(attempt.held_checkpoints) <= segments.MAX_HELD
