"""Draw an image grid from a checkpoint in the archive (a registered model version's, or any run's), or from a
family of experts and their router (jobs.family): one image per seed, by class for a class-conditional model.

Run on a pool node by jobs.runner as `python -m jobs.sample --config JSON --inputs JSON --output DIR`, where the
inputs map `checkpoint_sha256` to the checkpoint the runner fetched by that digest (for a family,
`expert_checkpoints:0`, `expert_checkpoints:1`, … and `router_sha256`).
Writes samples.png and metrics.json, and outputs.json declaring them (jobs.outputs).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from jobs import family, progress
from jobs.config import SampleConfig
from jobs.imaging import to_grid
from jobs.kinds import KINDS
from jobs.model import class_labels, draw_samples, pick_device
from jobs.outputs import declare


@dataclass(frozen=True)
class Args:
    cfg: SampleConfig
    checkpoint: Path | None
    output: Path
    inputs: dict[str, Path]


def parse(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(prog="jobs.sample", description=__doc__)
    parser.add_argument("--config", required=True, help="the sample job plan, as JSON")
    parser.add_argument("--inputs", required=True, help='{"checkpoint_sha256": PATH}, as JSON')
    parser.add_argument("--output", required=True, type=Path)
    ns = parser.parse_args(argv)
    inputs = {name: Path(path) for name, path in json.loads(ns.inputs).items()}
    return Args(SampleConfig.model_validate_json(ns.config), inputs.get("checkpoint_sha256"), ns.output, inputs)


def main(cfg: SampleConfig, checkpoint: Path | None, output: Path, inputs: dict[str, Path] | None = None) -> None:
    device = pick_device()
    output.mkdir(parents=True, exist_ok=True)
    unet, noise_scheduler, meta = family.subject(cfg.expert_checkpoints, checkpoint, dict(inputs or {}), device,
                                                 top_k=cfg.top_k if cfg.routing == "top_k" else None)
    seeds = cfg.image_seeds
    labels = class_labels(list(meta.get("classes") or []), cfg.classes, len(seeds))
    samples = draw_samples(
        unet, noise_scheduler, seeds, cfg.inference_steps, device,
        lambda done, total: progress.report(done, total, phase="sample"), sampler=cfg.sampler, labels=labels,
    )
    to_grid(samples).save(output / "samples.png")
    classes = meta.get("classes") or []
    (output / "metrics.json").write_text(json.dumps(
        {"device": str(device), "count": len(seeds), "inference_steps": cfg.inference_steps, "sampler": cfg.sampler,
         "images": [{"seed": seed, **({"class": classes[label]} if labels else {})}
                    for seed, label in zip(seeds, labels or [0] * len(seeds), strict=True)],
         **({"family": {"experts": len(cfg.expert_checkpoints), "routing": cfg.routing,
                        "top_k": cfg.top_k if cfg.routing == "top_k" else None}} if cfg.expert_checkpoints else {}),
         "checkpoint_meta": meta}, indent=2, default=str))
    declare(output, KINDS["sample"].outputs)
    print(f"done: {cfg.count} samples", flush=True)


if __name__ == "__main__":
    args = parse()
    main(args.cfg, args.checkpoint, args.output, args.inputs)
