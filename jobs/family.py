"""A family of experts sampled as one model: the router weighs the experts' noise predictions.

At every denoising step the router gives, for each noisy image and the timestep, a probability per cluster; the
family's noise prediction is the sum of the experts' predictions weighted by it (the full mixture), or by the
`top_k` largest weights renormalised to one (an expert whose weight is zero for every image is not run). A family
minus one expert (`leave_out`) is the same family with that expert's weight set to zero before the renormalising: a
leave-out model of that expert's cluster at no training cost. The experts share one noise schedule and image size.
Seeds work as for one model: the same seed gives the same image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel

from jobs import router as routing
from jobs.model import load_checkpoint


class Family:
    """Stands where a UNet stands in `jobs.model.draw_samples`: called with (images, timestep, class_labels), it
    returns an object whose `.sample` is the routed noise prediction."""

    def __init__(self, experts: list[UNet2DModel], router: routing.Router, top_k: int | None = None,
                 leave_out: int | None = None) -> None:
        if len(experts) != router.head.out_features:
            raise ValueError(f"the router weighs {router.head.out_features} experts, not {len(experts)}")
        sizes = {expert.config.sample_size for expert in experts}
        if len(sizes) != 1:
            raise ValueError(f"the experts make images of different sizes: {sorted(sizes)}")
        self.experts, self.router, self.top_k = experts, router, top_k
        self.leave_out = leave_out
        self.config = experts[0].config
        self.last_weights: torch.Tensor | None = None  # the weights of the last call, N x K

    def eval(self) -> Family:
        for expert in self.experts:
            expert.eval()
        self.router.eval()
        return self

    @property
    def leave_out(self) -> int | None:
        return self._leave_out

    @leave_out.setter
    def leave_out(self, expert: int | None) -> None:
        if expert is not None and not (0 <= expert < len(self.experts) and len(self.experts) > 1):
            raise ValueError(f"a family of {len(self.experts)} experts has no expert {expert} to leave out")
        self._leave_out = expert

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every weight the family samples with: its experts' and its router's."""
        for module in (*self.experts, self.router):
            yield from module.parameters()

    def weights(self, images: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        steps = torch.as_tensor(timestep, device=images.device).reshape(-1).expand(len(images))
        weights = routing.weights(self.router, images, steps)
        if self._leave_out is not None:
            weights = weights.clone()
            weights[:, self._leave_out] = 0
            weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        if self.top_k is not None and self.top_k < weights.shape[1]:
            kept = weights.topk(self.top_k, dim=1)
            weights = torch.zeros_like(weights).scatter(1, kept.indices, kept.values)
            weights = weights / weights.sum(dim=1, keepdim=True)
        return weights

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, timestep: torch.Tensor | int,
                 class_labels: torch.Tensor | None = None) -> SimpleNamespace:
        weights = self.weights(images, timestep)
        self.last_weights = weights
        noise = torch.zeros_like(images)
        for index, expert in enumerate(self.experts):
            share = weights[:, index]
            if bool((share > 0).any()):
                noise += share[:, None, None, None] * expert(images, timestep, class_labels=class_labels).sample
        return SimpleNamespace(sample=noise)


def load(experts: list[Path], router: Path, device: torch.device,
         top_k: int | None = None) -> tuple[Family, DDPMScheduler, dict[str, Any]]:
    """The family from its experts' checkpoints (in cluster order) and its router: the family, the experts' noise
    schedule and the first expert's provenance (with `experts` listing every expert's)."""
    loaded = [load_checkpoint(path, device) for path in experts]
    schedules = {tuple(sorted((k, str(v)) for k, v in scheduler.config.items() if not k.startswith("_")))
                 for _, scheduler, _ in loaded}
    if len(schedules) != 1:
        raise ValueError("the experts were trained with different noise schedules")
    weigher, payload = routing.load(router, device)
    if payload["num_train_timesteps"] != loaded[0][1].config.num_train_timesteps:
        raise ValueError("the router was trained on another noise schedule than the experts'")
    meta = {**loaded[0][2], "experts": [meta for _, _, meta in loaded], "router": payload.get("meta", {})}
    return Family([unet for unet, _, _ in loaded], weigher, top_k).eval(), loaded[0][1], meta


def from_inputs(experts: int, inputs: dict[str, Path], device: torch.device,
                top_k: int | None = None) -> tuple[Family, DDPMScheduler, dict[str, Any]]:
    """The family a job was sent: `expert_checkpoints:0` … `expert_checkpoints:{experts-1}` and `router_sha256`."""
    names = [f"expert_checkpoints:{i}" for i in range(experts)]
    missing = [name for name in [*names, "router_sha256"] if name not in inputs]
    if missing:
        raise ValueError(f"the family's files were not all sent to the job: {', '.join(missing)}")
    return load([inputs[name] for name in names], inputs["router_sha256"], device, top_k=top_k)


def subject(expert_checkpoints: list[str], checkpoint: Path | None, inputs: dict[str, Path], device: torch.device,
            top_k: int | None = None) -> tuple[Any, DDPMScheduler, dict[str, Any]]:
    """What a job samples: the family its plan names (by its experts' checkpoints), or its one checkpoint."""
    if expert_checkpoints:
        return from_inputs(len(expert_checkpoints), inputs, device, top_k=top_k)
    if checkpoint is None:
        raise ValueError("the plan's checkpoint was not sent to the job")
    return load_checkpoint(checkpoint, device)
