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


def from_grid(picture: Image.Image, count: int, side: int, scale: int = 4) -> np.ndarray:
    """The `count` images of a grid made by `to_grid` (each side x side, enlarged `scale` times), as
    count x side x side x 3 float32 in [0, 1]. Refuses a picture of another shape."""
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    expected = (columns * (side + 1) + 1) * scale, (rows * (side + 1) + 1) * scale
    if picture.size != expected:
        raise ValueError(f"the grid is {picture.size[0]}x{picture.size[1]}, not the {expected[0]}x{expected[1]} "
                         f"of {count} images of {side}x{side}")
    pixels = np.asarray(picture.convert("RGB"))[::scale, ::scale]
    images = []
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = 1 + row * (side + 1), 1 + column * (side + 1)
        images.append(pixels[top:top + side, left:left + side])
    return np.stack(images).astype(np.float32) / 255
