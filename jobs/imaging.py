"""Tensors to pictures: image grids for samples and for the training set."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def to_grid(images: torch.Tensor, scale: int = 4) -> Image.Image:
    """An N x 3 x H x W batch in [-1, 1] as a near-square grid, each image enlarged `scale` times."""
    count, _, height, width = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    grid = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), 255, dtype=np.uint8)
    for index, pixel_block in enumerate(pixels):
        row, column = divmod(index, columns)
        top, left = 1 + row * (height + 1), 1 + column * (width + 1)
        grid[top:top + height, left:left + width] = pixel_block
    picture = Image.fromarray(grid)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
