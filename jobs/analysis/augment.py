"""The edits a copy goes through, as copy detection models them (the DISC21 benchmark's, Douze et al. 2021): a crop
(re-framed, rescaled), a shift, a mirror image, colour changes, blur and JPEG re-encoding. Batched on tensors,
N x 3 x H x W in [0, 1], the output the size of the input; deterministic given the generator."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CROP_SCALE = (0.45, 1.0)  # the share of the picture's area a crop keeps
ASPECT = (3 / 4, 4 / 3)
SHIFT = 0.15  # the largest shift, as a share of the side (beside the crop's own placement)
JPEG_QUALITY = (25, 90)


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def crop_shift_flip(images: torch.Tensor, generator: torch.Generator, flip: float = 0.5) -> torch.Tensor:
    """A random crop of each image (area CROP_SCALE, aspect ASPECT) moved by up to SHIFT, mirrored with
    probability `flip`, resampled to the full size (bilinear; outside the picture, its edge repeats)."""
    n = len(images)
    area = _uniform(generator, n, *CROP_SCALE)
    aspect = torch.exp(_uniform(generator, n, float(np.log(ASPECT[0])), float(np.log(ASPECT[1]))))
    width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    cx = (1 - width) * _uniform(generator, n, -1, 1) + SHIFT * _uniform(generator, n, -1, 1)
    cy = (1 - height) * _uniform(generator, n, -1, 1) + SHIFT * _uniform(generator, n, -1, 1)
    mirror = torch.where(torch.rand(n, generator=generator) < flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * mirror, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour(images: torch.Tensor, generator: torch.Generator, strength: float = 0.4,
           grey: float = 0.1) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by up to ±strength; grey with probability `grey`."""
    n = len(images)
    shape = (n, 1, 1, 1)
    out = images * _uniform(generator, n, 1 - strength, 1 + strength).view(shape).to(images)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * _uniform(generator, n, 1 - strength, 1 + strength).view(shape).to(images) + mean
    luma = (out * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1).to(images)).sum(1, keepdim=True)
    saturation = _uniform(generator, n, 1 - strength, 1 + strength).view(shape).to(images)
    saturation = torch.where(torch.rand(shape, generator=generator).to(images) < grey, 0.0, saturation)
    return ((out - luma) * saturation + luma).clamp(0, 1)


def blur(images: torch.Tensor, generator: torch.Generator, chance: float = 0.5,
         sigma: tuple[float, float] = (0.3, 1.2)) -> torch.Tensor:
    """A Gaussian blur (sigma in `sigma` pixels) of a `chance` share of the images."""
    n, channels = images.shape[:2]
    sigmas = _uniform(generator, n, *sigma)
    chosen = torch.rand(n, generator=generator) < chance
    offsets = torch.arange(-2, 3, dtype=torch.float32)
    out = images.clone()
    for index in torch.nonzero(chosen).flatten().tolist():
        kernel = torch.exp(-(offsets**2) / (2 * float(sigmas[index]) ** 2))
        kernel = (kernel / kernel.sum()).to(images)
        one = F.pad(images[index:index + 1], (2, 2, 2, 2), mode="replicate")
        one = F.conv2d(one, kernel.view(1, 1, 1, 5).repeat(channels, 1, 1, 1), groups=channels)
        out[index] = F.conv2d(one, kernel.view(1, 1, 5, 1).repeat(channels, 1, 1, 1), groups=channels)[0]
    return out


def jpeg(images: torch.Tensor, generator: torch.Generator, chance: float = 0.4) -> torch.Tensor:
    """A `chance` share of the images re-encoded as JPEG at a quality in JPEG_QUALITY."""
    n = len(images)
    qualities = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (n,), generator=generator)
    chosen = torch.rand(n, generator=generator) < chance
    out = images.clone()
    for index in torch.nonzero(chosen).flatten().tolist():
        pixels = (images[index].permute(1, 2, 0).detach().cpu().numpy() * 255).round().astype(np.uint8)
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="JPEG", quality=int(qualities[index]))
        with Image.open(io.BytesIO(encoded.getvalue())) as again:
            decoded = np.asarray(again.convert("RGB"), dtype=np.float32) / 255
        out[index] = torch.from_numpy(decoded).permute(2, 0, 1).to(images)
    return out


def copy_edits(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Every edit in turn, each at random: what a copy of a picture may look like."""
    return jpeg(blur(colour(crop_shift_flip(images, generator), generator), generator), generator)
