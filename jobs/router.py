"""Train a family's router: p(cluster | x_t, t), a small convolutional classifier of noised images.

Decentralized Diffusion Models (McAllister et al. 2025) train one expert per data cluster in isolation and a
router that says, for a noisy image and a timestep, which experts know that region of the data; sampling weighs the
experts' noise predictions by it. The router here sees images of the whole dataset noised with the experts' DDPM
schedule at uniformly drawn timesteps, labelled with their cluster in the partition. A share of the images (by a
seeded draw) is held out, and its accuracy is measured per tenth of the schedule: near chance at high noise,
high at low noise, where the image still shows which cluster it came from.

Run on a pool node by jobs.runner as `python -m jobs.router --config JSON --output DIR --inputs JSON`.
Writes router.pt, metrics.json, accuracy.png and outputs.json declaring them (jobs.outputs).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler
from PIL import Image, ImageDraw
from torch import nn

from jobs import dataset as datasets
from jobs import partition, progress
from jobs.config import RouterConfig
from jobs.kinds import KINDS
from jobs.model import pick_device
from jobs.outputs import declare

ROUTER_FORMAT = "observatory-router-1"
DECILES = 10
DRAWS_PER_IMAGE = 8  # noise draws per held-out image and tenth of the schedule


class Router(nn.Module):
    """Three strided convolutions with the timestep (sinusoidal features) added to each, pooled to K logits."""

    def __init__(self, clusters: int, channels: int, timesteps: int) -> None:
        super().__init__()
        self.timesteps = timesteps
        widths = [channels, channels * 2, channels * 4]
        self.frequencies = nn.Parameter(torch.exp(torch.linspace(0, math.log(1000), 16)), requires_grad=False)
        self.time = nn.ModuleList(nn.Linear(32, width) for width in widths)
        self.convs = nn.ModuleList(nn.Conv2d(inputs, width, 3, stride=2 if i else 1, padding=1)
                                   for i, (inputs, width) in enumerate(zip([3, *widths[:-1]], widths, strict=True)))
        self.norms = nn.ModuleList(nn.GroupNorm(8, width) for width in widths)
        self.head = nn.Linear(widths[-1], clusters)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        phase = (timesteps.float() / self.timesteps)[:, None] * self.frequencies[None, :]
        features = torch.cat([phase.sin(), phase.cos()], dim=1)
        hidden = noisy
        for conv, norm, time in zip(self.convs, self.norms, self.time, strict=True):
            hidden = nn.functional.silu(norm(conv(hidden)) + time(features)[:, :, None, None])
        return self.head(hidden.mean(dim=(2, 3)))


def weights(router: Router, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """N x K: the router's probability of each cluster for each noisy image."""
    return torch.softmax(router(noisy, timesteps), dim=1)


def save(path: Path, router: Router, cfg: RouterConfig, clusters: int, meta: dict[str, Any]) -> None:
    torch.save({"format": ROUTER_FORMAT, "clusters": clusters, "channels": cfg.channels,
                "num_train_timesteps": cfg.num_train_timesteps, "resolution": cfg.resolution,
                "partition": cfg.partition, "meta": meta,
                "state_dict": {k: v.detach().cpu() for k, v in router.state_dict().items()}}, path)


def load(path: Path, device: torch.device) -> tuple[Router, dict[str, Any]]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != ROUTER_FORMAT:
        raise ValueError(f"{path.name} is not a router of this observatory")
    router = Router(payload["clusters"], payload["channels"], payload["num_train_timesteps"])
    router.load_state_dict(payload["state_dict"])
    return router.to(device).eval(), payload


def _split(count: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and held-out images, drawn with the seed (at least one of each)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held = min(max(1, round(count * share)), count - 1)
    return order[held:], order[:held]


@torch.no_grad()
def accuracy_by_decile(router: Router, scheduler: DDPMScheduler, images: torch.Tensor, labels: torch.Tensor,
                       seed: int) -> list[float]:
    """The share of right answers on `images` per tenth of the noise schedule (DRAWS_PER_IMAGE noise draws each)."""
    generator = torch.Generator(images.device).manual_seed(seed + 1)
    total = scheduler.config.num_train_timesteps
    found = []
    for decile in range(DECILES):
        low, high = decile * total // DECILES, max((decile + 1) * total // DECILES, decile * total // DECILES + 1)
        batch = images.repeat(DRAWS_PER_IMAGE, 1, 1, 1)
        truth = labels.repeat(DRAWS_PER_IMAGE)
        steps = torch.randint(low, high, (len(batch),), generator=generator, device=images.device)
        noise = torch.randn(batch.shape, generator=generator, device=images.device)
        guessed = router(scheduler.add_noise(batch, noise, steps), steps).argmax(dim=1)
        found.append(round(float((guessed == truth).float().mean()), 4))
    return found


def chart(accuracy: list[float], chance: float) -> Image.Image:
    """Bars of the held-out accuracy per tenth of the schedule (least noise on the left), chance as a line."""
    width, height, margin = 420, 220, 30
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    bar = (width - 2 * margin) / len(accuracy)
    for index, value in enumerate(accuracy):
        left = margin + index * bar
        draw.rectangle([left + 2, height - margin - value * (height - 2 * margin), left + bar - 2, height - margin],
                       fill=(60, 110, 180))
    line = height - margin - chance * (height - 2 * margin)
    draw.line([margin, line, width - margin, line], fill=(200, 60, 60), width=2)
    draw.text((margin, 6), "held-out accuracy by noise (low noise on the left); red: chance", fill="black")
    draw.line([margin, height - margin, width - margin, height - margin], fill="black")
    return picture


def main(cfg: RouterConfig, output: Path, inputs: dict[str, Path] | None = None) -> dict[str, Any]:
    inputs = dict(inputs or {})
    output.mkdir(parents=True, exist_ok=True)
    device = pick_device()
    torch.manual_seed(cfg.seed)
    cut = partition.from_inputs(inputs, cfg.partition, cfg.dataset_digest)
    data = datasets.load(inputs, cfg.dataset_digest, cfg.resolution, name=cfg.dataset,
                         withdrawn=set(cfg.withdrawn_images))
    labels = torch.tensor([cut["assignment"][str(e["image_sha256"])] for e in data.entries], device=device)
    images = data.images.to(device)
    clusters = int(cut["k"])
    train_set, held_out = _split(len(images), cfg.held_out, cfg.seed)
    train_set, held_out = train_set.to(device), held_out.to(device)
    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    router = Router(clusters, cfg.channels, cfg.num_train_timesteps).to(device)
    optimizer = torch.optim.Adam(router.parameters(), lr=cfg.learning_rate)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    losses = []
    for step in range(1, cfg.steps + 1):
        pick = train_set[torch.randint(len(train_set), (cfg.batch_size,), generator=generator, device=device)]
        steps = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=generator, device=device)
        noise = torch.randn(images[pick].shape, generator=generator, device=device)
        loss = nn.functional.cross_entropy(router(scheduler.add_noise(images[pick], noise, steps), steps),
                                           labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0 or step == cfg.steps:
            progress.report(step, cfg.steps, loss=round(losses[-1], 4))
    router.eval()
    accuracy = accuracy_by_decile(router, scheduler, images[held_out], labels[held_out], cfg.seed)
    shares = torch.bincount(labels[held_out], minlength=clusters).float() / len(held_out)
    chance = round(float(shares.max()), 4)  # always answering the commonest cluster of the held-out images
    metrics = {"kind": "router", "clusters": clusters, "partition": cfg.partition, "dataset_digest": data.digest,
               "images": len(images), "held_out_images": len(held_out), "accuracy_by_noise_decile": accuracy,
               "chance": chance, "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
               "loss_curve": losses[:: max(1, len(losses) // 200)], "config": cfg.model_dump(mode="json")}
    save(output / "router.pt", router, cfg, clusters, {"dataset_digest": data.digest})
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    chart(accuracy, chance).save(output / "accuracy.png")
    declare(output, KINDS["router"].outputs)
    print(f"done: held-out accuracy {accuracy[0]:.2f} at the least noise, {accuracy[-1]:.2f} at the most "
          f"(chance {chance:.2f})", flush=True)
    return metrics


def parse(argv: list[str] | None = None) -> tuple[RouterConfig, Path, dict[str, Path]]:
    parser = argparse.ArgumentParser(prog="jobs.router", description=__doc__)
    parser.add_argument("--config", required=True, help="the router job plan, as JSON")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--inputs", default="{}", help="the plan's inputs fetched to this node, as JSON")
    ns = parser.parse_args(argv)
    inputs = {name: Path(path) for name, path in json.loads(ns.inputs).items()}
    return RouterConfig.model_validate_json(ns.config), ns.output, inputs


if __name__ == "__main__":
    cfg, output, inputs = parse()
    main(cfg, output, inputs)
