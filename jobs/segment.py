"""Check a volunteer's training: re-run one segment of it and see whether it lands where the volunteer said.

Run by jobs.runner as `python -m jobs.segment --config JSON --output DIR --inputs JSON`, with the training's own
inputs (dataset, base model), the state at the segment's start (`segment_from`; none for a segment that starts at
step 0, which the plan's seed rebuilds) and the state or final checkpoint it should reach (`segment_to`). The
training code is the training job's own (jobs.train), so a re-run from a state is the exact resume every run uses.

The verdict is proof of learning's (Jia et al. 2021): the distance between the weights the re-run reaches and the
weights shipped, as a share of the distance the segment moved them. Honest work lands within float noise (0 on the
same kind of processor); a state that skipped steps, or that came from other data, lands as far off as the segment
moved. Writes segment.json (declared in outputs.json).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from jobs import progress
from jobs.config import SegmentCheckConfig
from jobs.kinds import SEGMENT_CHECK, SEGMENT_FROM, SEGMENT_TO
from jobs.model import pick_device
from jobs.outputs import declare
from jobs.train import Trainer, build_trainer


def kept_weights(trainer: Trainer, target: str) -> dict[str, torch.Tensor]:
    """The weights a state holds (the model's), or those a final checkpoint keeps (the average, where there is
    one), as float32 on the CPU."""
    if target == "checkpoint" and trainer.average is not None:
        weights = trainer.average.state()
    else:
        weights = trainer.unet.state_dict()
    return {name: value.detach().float().cpu().clone() for name, value in weights.items()}


def target_weights(path: Path, target: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """The weights shipped (a resume state's model, or a checkpoint's) and the step a state says it is at."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    weights = payload["unet"] if target == "state" else payload["state_dict"]
    step = int(payload["step"]) if target == "state" else None
    return {name: value.float() for name, value in weights.items()}, step


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The L2 distance between two sets of weights of the same names and shapes."""
    if a.keys() != b.keys() or any(a[name].shape != b[name].shape for name in a):
        return math.inf
    return math.sqrt(sum(float(((a[name] - b[name]) ** 2).sum()) for name in a))


def check(cfg: SegmentCheckConfig, inputs: dict[str, Path], device: torch.device) -> dict[str, object]:
    """Re-run the segment and measure where it lands; a state that cannot be read or resumed from, or that says it
    is at another step than it was shipped as, does not land."""
    inputs = dict(inputs)
    start, end = inputs.pop(SEGMENT_FROM, None), inputs.pop(SEGMENT_TO)
    result: dict[str, object] = {"from_step": cfg.from_step, "to_step": cfg.to_step, "target": cfg.target,
                                 "tolerance": cfg.tolerance, "device": device.type}
    trainer = build_trainer(cfg.train, device, inputs)
    try:
        if start is not None:
            trainer.restore(start)
        shipped, said = target_weights(end, cfg.target)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the files shipped, they are not a training's
        return {**result, "lands": False, "why": f"a state shipped cannot be read: {exc.__class__.__name__}"}
    if trainer.step != cfg.from_step or said not in (None, cfg.to_step):
        return {**result, "lands": False, "why": f"the states shipped as steps {cfg.from_step} and {cfg.to_step} "
                                                 f"say they are at {trainer.step} and {said}"}
    before = kept_weights(trainer, cfg.target)
    while trainer.step < cfg.to_step:
        trainer.step_once()
        progress.report(trainer.step - cfg.from_step, cfg.to_step - cfg.from_step, phase="re-running a segment")
    reached = kept_weights(trainer, cfg.target)
    moved, off = distance(before, shipped), distance(reached, shipped)
    share = off / moved if moved > 0 else (0.0 if off == 0 else math.inf)
    return {**result, "moved": round(moved, 6), "off": round(off, 6) if math.isfinite(off) else None,
            "off_share": round(share, 6) if math.isfinite(share) else None, "lands": share <= cfg.tolerance}


def main(cfg: SegmentCheckConfig, output: Path, inputs: dict[str, Path]) -> dict[str, object]:
    device = pick_device()
    print(f"re-running steps {cfg.from_step} to {cfg.to_step} on {device} to check the {cfg.target} shipped",
          flush=True)
    result = check(cfg, inputs, device)
    output.mkdir(parents=True, exist_ok=True)
    (output / "segment.json").write_text(json.dumps(result, indent=2))
    declare(output, SEGMENT_CHECK.outputs)
    verdict = "lands on it" if result["lands"] else "does NOT land on it"
    print(f"the re-run {verdict}: {result.get('why') or ''}off by {result.get('off_share')} of the distance moved "
          f"({result.get('moved')}); tolerance {cfg.tolerance}", flush=True)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="jobs.segment", description=__doc__)
    parser.add_argument("--config", required=True, help="the check's plan, as JSON")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--inputs", required=True, help="the inputs fetched to this node, as JSON")
    ns = parser.parse_args()
    main(SegmentCheckConfig.model_validate_json(ns.config), ns.output,
         {name: Path(path) for name, path in json.loads(ns.inputs).items()})
