"""The observatory's diffusion model: a diffusers UNet2DModel under a DDPM noise schedule, and its checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from jobs.config import TrainConfig

CHECKPOINT_FORMAT = "commons-observatory/unet-ddpm/1"


def pick_device() -> torch.device:
    """CUDA on an owner's GPU, the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_unet(cfg: TrainConfig, num_classes: int = 0) -> UNet2DModel:
    """The plan's UNet; with `num_classes`, a class-conditional one (a learned embedding per class, added to the
    timestep's)."""
    blocks = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=cfg.resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * blocks,
        up_block_types=("UpBlock2D",) * blocks,
        norm_num_groups=8,
        num_class_embeds=num_classes or None,
    )


def build_noise_scheduler(cfg: TrainConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps)


def save_checkpoint(path: Path, unet: UNet2DModel, noise_scheduler: DDPMScheduler, meta: dict[str, Any]) -> None:
    """One self-describing file: configs, weights (on the CPU) and provenance."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "unet_config": dict(unet.config),
        "scheduler_config": dict(noise_scheduler.config),
        "state_dict": {key: value.detach().cpu() for key, value in unet.state_dict().items()},
        "meta": meta,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, device: torch.device) -> tuple[UNet2DModel, DDPMScheduler, dict[str, Any]]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a Commons Observatory checkpoint")
    unet = UNet2DModel.from_config(_plain(payload["unet_config"]))
    unet.load_state_dict(payload["state_dict"])
    noise_scheduler = DDPMScheduler.from_config(_plain(payload["scheduler_config"]))
    return unet.to(device).eval(), noise_scheduler, payload["meta"]


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}


def class_labels(classes: list[str], wanted: list[str], count: int) -> list[int] | None:
    """Each image's class index, taking `wanted` (default: every class) in turn; None for an unconditional model."""
    if not classes:
        if wanted:
            raise ValueError("this model is not class-conditional: it cannot draw by class")
        return None
    unknown = [name for name in wanted if name not in classes]
    if unknown:
        raise ValueError(f"the model has no class {', '.join(map(repr, unknown))}; its classes are "
                         f"{', '.join(classes)}")
    order = [classes.index(name) for name in wanted] or list(range(len(classes)))
    return [order[i % len(order)] for i in range(count)]


@torch.no_grad()
def draw_samples(
    unet: UNet2DModel, noise_scheduler: DDPMScheduler, seeds: list[int], inference_steps: int,
    device: torch.device, on_step: Any = None, sampler: str = "ddpm", labels: list[int] | None = None,
) -> torch.Tensor:
    """Run the reverse diffusion, by DDPM or (deterministic) DDIM over the same noise schedule, one image per seed
    (and class label): each image's noise comes from its own seed's generator, so the same seed and class give the
    same image in any batch. Returns len(seeds) x 3 x R x R in [-1, 1]."""
    unet.eval()
    side = unet.config.sample_size
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    images = torch.cat([torch.randn((1, 3, side, side), generator=g) for g in generators]).to(device)
    class_tensor = torch.tensor(labels, device=device) if labels is not None else None
    if sampler == "ddim":
        noise_scheduler = DDIMScheduler.from_config(noise_scheduler.config)
    noise_scheduler.set_timesteps(inference_steps)
    for index, timestep in enumerate(noise_scheduler.timesteps):
        predicted_noise = unet(images, timestep, class_labels=class_tensor).sample
        images = noise_scheduler.step(predicted_noise, timestep, images, generator=generators).prev_sample
        if on_step is not None:
            on_step(index + 1, len(noise_scheduler.timesteps))
    return images.clamp(-1, 1).cpu()
