"""A volunteer's training, validated by re-running segments of it (proof of learning, Jia et al. 2021).

While it trains, a volunteer's attempt ships its resume state now and then, as every training attempt does; those
states are held on the attempt (`held_checkpoints`), never made the run's resume point. They cut the training into
segments: from the seed (step 0) to the first state, from each state to the next, and from the last to the final
checkpoint. Once the attempt has sent its outputs, CHECKED segments are chosen: the last one (which ends on the
weights that would be published) and one other at random. Each is re-run by `COPIES` volunteers of other owners,
on the same kind of processor (a re-run on another kind follows another random stream), with the training's own
code (jobs.segment); their reports must agree with one another as any volunteers' results must. The training counts
only when every checked segment lands on the state shipped; one that does not proves it wrong.
"""

from __future__ import annotations

import random
from typing import Any

from jobs.config import SEGMENT_TOLERANCE
from jobs.kinds import SEGMENT_CHECK, SEGMENT_FROM, SEGMENT_TO, JobKind, job_kind
from service.models import RunAttempt

MAX_HELD = 256  # states held per attempt; past this every other one is let go (the segments grow longer)
CHECKED = 2  # segments re-run per training: the last, and one other at random
COPIES = 2  # re-runs of a segment that must agree


def attempt_kind(run_kind: str, attempt: RunAttempt) -> JobKind:
    """What an attempt runs: a check of another attempt's segment, or the run's own kind."""
    return SEGMENT_CHECK if attempt.segment_check else job_kind(run_kind)


def hold(attempt: RunAttempt, step: int, sha256: str, size: int) -> None:
    """Keep a state the attempt shipped, in step order; an older state with the same step is replaced."""
    held = [entry for entry in attempt.held_checkpoints if int(entry[0]) != step]
    held.append([step, sha256, size])
    held.sort(key=lambda entry: int(entry[0]))
    if len(held) > MAX_HELD:
        held = held[1::2]
    attempt.held_checkpoints = held


def chain(attempt: RunAttempt, steps: int) -> list[tuple[int, str | None, str]]:
    """The points the training passed through: (step, sha256, what it is), from the seed to the final checkpoint."""
    final = attempt.held_outputs.get("checkpoint.pt", {}).get("sha256")
    points: list[tuple[int, str | None, str]] = [(0, None, "seed")]
    points += [(int(step), str(sha), "state") for step, sha, _ in attempt.held_checkpoints if 0 < int(step) < steps]
    points.append((steps, final, "checkpoint"))
    return points


def choose(attempt: RunAttempt, steps: int, rng: random.Random | None = None) -> list[dict[str, Any]]:
    """The segments to re-run: the last (it ends on what would be published) and one other at random."""
    rng = rng or random.SystemRandom()
    points = chain(attempt, steps)
    pairs = list(zip(points, points[1:], strict=False))
    picked = [len(pairs) - 1]
    if len(pairs) > 1:
        picked.insert(0, rng.randrange(len(pairs) - 1))
    return [{"from_step": pairs[i][0][0], "from_sha256": pairs[i][0][1], "to_step": pairs[i][1][0],
             "to_sha256": pairs[i][1][1], "target": pairs[i][1][2], "copies": COPIES} for i in picked[:CHECKED]]


def check_spec(trained: RunAttempt, index: int) -> dict[str, Any]:
    """What a check attempt holds: whose segment it re-runs, and the segment."""
    return {"of": trained.number, "segment": index, **trained.segments[index]}


def check_plan(train_config: dict[str, Any], check: dict[str, Any]) -> dict[str, Any]:
    """The plan a check attempt runs (a SegmentCheckConfig)."""
    return {"kind": SEGMENT_CHECK.name, "train": train_config, "from_step": check["from_step"],
            "to_step": check["to_step"], "target": check["target"], "tolerance": SEGMENT_TOLERANCE}


def check_inputs(check: dict[str, Any]) -> dict[str, str]:
    """The states a check attempt is sent beside the training's own inputs."""
    inputs = {SEGMENT_TO: str(check["to_sha256"])}
    if check.get("from_sha256"):
        inputs[SEGMENT_FROM] = str(check["from_sha256"])
    return inputs


def describe(segment: dict[str, Any]) -> str:
    end = "the final checkpoint" if segment["target"] == "checkpoint" else f"the state at step {segment['to_step']}"
    start = "the seed" if not segment.get("from_sha256") else f"the state at step {segment['from_step']}"
    return f"steps {segment['from_step']}→{segment['to_step']} (from {start} to {end})"


def validation(attempt: RunAttempt) -> str:
    """In one line, for the run's page: what a check re-runs, or how a training's chosen segments landed."""
    if attempt.segment_check:
        return f"re-runs {describe(attempt.segment_check)} of attempt {attempt.segment_check['of']}"
    said = []
    for segment in attempt.segments:
        if "lands" not in segment:
            verdict = "being re-run"
        elif segment["lands"]:
            verdict = f"lands (off by {segment.get('off_share') or 0:.2g} of the distance moved)"
        else:
            off = segment.get("off_share")
            verdict = f"does not land ({segment.get('why') or f'off by {off} of the distance moved' if off else 'far'})"
        said.append(f"steps {segment['from_step']}→{segment['to_step']} {verdict}")
    return ("checked by re-running: " + "; ".join(said)) if said else ""
