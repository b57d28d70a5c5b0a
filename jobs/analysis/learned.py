"""A learned copy descriptor, SSCD-style (Pizzi et al. 2022), small enough for a home GPU or a CPU: a convolutional
network whose unit-length output brings an image and its edited copies together (jobs.analysis.augment) and spreads
distinct images apart. Trained by the `descriptor` job (jobs.descriptor) on a dataset version; nothing is
downloaded. Its file holds the weights, its shape and its operating threshold (`save`, `load`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "commons-observatory/copy-descriptor/1"


class GeM(nn.Module):
    """Generalised-mean pooling (p = 3): between average and max pooling, as copy descriptors use."""

    def __init__(self, p: float = 3.0) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1 / self.p)


def _block(channels_in: int, channels_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1),
                         nn.GroupNorm(8, channels_out), nn.ReLU(inplace=True),
                         nn.Conv2d(channels_out, channels_out, 3, padding=1), nn.GroupNorm(8, channels_out),
                         nn.ReLU(inplace=True))


class CopyDescriptor(nn.Module):
    """Images (N x 3 x R x R in [0, 1]) to unit vectors (N x dim): three convolutional stages, GeM pooling and a
    linear projection."""

    def __init__(self, resolution: int, width: int = 32, dim: int = 64) -> None:
        super().__init__()
        self.shape = {"resolution": resolution, "width": width, "dim": dim}
        self.features = nn.Sequential(_block(3, width, 1), _block(width, 2 * width, 2), _block(2 * width, 4 * width, 2))
        self.pool = GeM()
        self.project = nn.Linear(4 * width, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(self.pool(self.features(images * 2 - 1))), dim=1)


def save(path: Path, model: CopyDescriptor, meta: dict[str, Any]) -> None:
    torch.save({"format": FORMAT, "shape": model.shape, "state_dict": {k: v.detach().cpu() for k, v in
                                                                        model.state_dict().items()}, "meta": meta},
               path)


def load(path: Path, device: torch.device | None = None) -> tuple[CopyDescriptor, dict[str, Any]]:
    """The descriptor in a file the `descriptor` job wrote (weights only: nothing in it is executed)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path.name} is not a copy descriptor's file")
    model = CopyDescriptor(**payload["shape"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device or torch.device("cpu")).eval(), dict(payload.get("meta") or {})


@torch.no_grad()
def embed(model: CopyDescriptor, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """N x H x W x 3 arrays in [0, 1] as N x dim unit vectors, each image resized to the descriptor's own side."""
    device = next(model.parameters()).device
    side = model.shape["resolution"]
    out = []
    for start in range(0, len(images), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch])).permute(0, 3, 1, 2).float()
        if chunk.shape[-1] != side or chunk.shape[-2] != side:
            chunk = F.interpolate(chunk, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        out.append(model(chunk.to(device)).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.shape["dim"]), np.float32)


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over two views of a batch (2N unit vectors): each view's match is the other view of its image."""
    z = torch.cat([a, b])
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def koleo(z: torch.Tensor) -> torch.Tensor:
    """The Kozachenko-Leonenko entropy regulariser (Sablayrolles et al. 2019, as SSCD uses it): minus the mean log
    distance of each vector to its nearest other, so that distinct images spread over the sphere."""
    with torch.no_grad():
        similarity = z @ z.T
        similarity.fill_diagonal_(-2)
        nearest = similarity.argmax(dim=1)
    return -torch.log((z - z[nearest]).norm(dim=1) + 1e-8).mean()
