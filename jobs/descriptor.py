"""The `descriptor` job: train a copy descriptor (jobs.analysis.learned) on a dataset version's distinct images and
measure it on the ones it held out.

Run by jobs.runner as `python -m jobs.descriptor --config JSON --inputs JSON --output DIR`, with the version's
manifest and shards as inputs. Each step draws a batch of training images, edits each twice at random as copies are
edited (jobs.analysis.augment) and trains the network to tell each copy's original among the batch (InfoNCE), with
the KoLeo term spreading distinct images apart. Then, on queries made from the held-out images by the same edits
(half of them copies of a reference, half distractors), it measures copy-detection muAP (jobs.analysis.copy_eval)
for itself and for the structure descriptor, and sets its operating threshold on the normalised score (a query's
similarity to a reference less its best similarity to any other, after SSCD): above every false match measured.

Writes descriptor.pt (weights, shape, threshold and provenance), metrics.json, attribution.json (the images it
learned from, with authors and licenses) and outputs.json declaring them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs import dataset as datasets
from jobs import progress
from jobs.analysis import augment, copy_eval, descriptors, learned
from jobs.analysis.common import plan_arguments, rounded, to_unit
from jobs.config import DescriptorConfig
from jobs.kinds import KINDS
from jobs.model import pick_device
from jobs.outputs import declare

MIN_IMAGES = 8  # fewer distinct images cannot be split into something to learn from and something to measure on


def split(count: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices learned from and held out (at least two held out, and at least half learned from)."""
    order = np.random.default_rng(seed).permutation(count)
    held = min(max(2, round(count * share)), count // 2)
    return np.sort(order[held:]), np.sort(order[:held])


def train_network(cfg: DescriptorConfig, images: np.ndarray, device: torch.device,
                  report: bool = True) -> tuple[learned.CopyDescriptor, list[float]]:
    """The descriptor trained on `images` (N x R x R x 3 in [0, 1]); and its loss, step by step."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = learned.CopyDescriptor(cfg.resolution, cfg.width, cfg.dim).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
    pool = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    batch = min(cfg.batch_size, len(pool))
    losses: list[float] = []
    model.train()
    for step in range(1, cfg.steps + 1):
        index = torch.randperm(len(pool), generator=generator)[:batch]
        chosen = pool[index]
        a = augment.copy_edits(chosen, generator).to(device)
        b = augment.copy_edits(chosen, generator).to(device)
        za, zb = model(a), model(b)
        loss = learned.contrastive_loss(za, zb, cfg.temperature)
        if cfg.entropy_weight:
            loss = loss + cfg.entropy_weight * learned.koleo(torch.cat([za, zb]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if report and (step % max(1, cfg.steps // 100) == 0 or step == cfg.steps):
            progress.report(step, cfg.steps + 1, phase="train", loss=round(losses[-1], 4))
    return model.eval(), losses


def measured(model: learned.CopyDescriptor, held_out: np.ndarray, background: np.ndarray,
             seed: int) -> dict[str, Any]:
    """Copy detection on the held-out images (the images learned from as the background), the learned descriptor
    beside the structure descriptor."""
    bench = copy_eval.benchmark(held_out, background, seed)
    return {"learned": copy_eval.evaluate(lambda x: learned.embed(model, x), bench),
            "structure": copy_eval.evaluate(descriptors.features, bench)}


def main(cfg: DescriptorConfig, inputs: dict[str, Path], output: Path) -> dict[str, Any]:
    device = pick_device()
    data = datasets.load(inputs, cfg.dataset_digest, cfg.resolution, name=cfg.dataset,
                         withdrawn=set(cfg.withdrawn_images))
    shas = [str(e["image_sha256"]) for e in data.entries]
    _, first = np.unique(shas, return_index=True)
    first = np.sort(first)
    if len(first) < MIN_IMAGES:
        raise ValueError(f"{cfg.dataset} has {len(first)} distinct images; a descriptor needs at least {MIN_IMAGES}")
    images = to_unit(data.images[torch.from_numpy(first)])
    learn, held = split(len(first), cfg.held_out, cfg.seed)
    print(f"training a copy descriptor on {device}: {len(learn)} images, {len(held)} held out", flush=True)
    started = time.perf_counter()
    model, losses = train_network(cfg, images[learn], device)
    trained_s = time.perf_counter() - started
    evaluation = measured(model.cpu(), images[held], images[learn], cfg.seed)
    progress.report(cfg.steps + 1, cfg.steps + 1, phase="evaluate")
    threshold = evaluation["learned"]["threshold"]
    meta = rounded({"dataset": data.name, "dataset_digest": data.digest, "images": len(learn),
                    "held_out": len(held), "threshold": threshold,
                    "evaluation": evaluation,
                    "config": cfg.model_dump(mode="json")})
    output.mkdir(parents=True, exist_ok=True)
    learned.save(output / "descriptor.pt", model, meta)
    metrics = rounded({"device": str(device), "parameters": sum(p.numel() for p in model.parameters()),
                       "steps": cfg.steps, "final_loss": losses[-1], "seconds_per_step": trained_s / cfg.steps,
                       "loss_curve": losses[:: max(1, len(losses) // 200)], "dataset_digest": data.digest,
                       "evaluation": evaluation, "threshold": meta["threshold"],
                       "config": cfg.model_dump(mode="json")})
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (output / "attribution.json").write_text(json.dumps(
        {"dataset": data.name, "digest": data.digest, "images": [data.entries[first[i]] for i in learn]},
        indent=2, ensure_ascii=False))
    declare(output, KINDS["descriptor"].outputs)
    e = evaluation
    print(f"done: copy detection on {e['learned']['queries']} held-out queries: learned muAP "
          f"{e['learned']['muap']:.3f}, structure muAP {e['structure']['muap']:.3f}; operating threshold "
          f"{meta['threshold']:.3f}", flush=True)
    return metrics


def parse(argv: list[str] | None = None) -> tuple[DescriptorConfig, dict[str, Path], Path]:
    return plan_arguments("jobs.descriptor", __doc__, DescriptorConfig, argv)


if __name__ == "__main__":
    main(*parse())
