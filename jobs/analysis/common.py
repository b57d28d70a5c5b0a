"""What the analyses share: images as arrays in [0, 1], the tile grid, and results rounded to compare byte for
byte."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

DIGITS = 6


def rounded(value: Any) -> Any:
    """Numbers rounded to DIGITS significant places, recursively, so that results compare byte for byte."""
    if isinstance(value, float | np.floating):
        return float(f"{float(value):.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def to_unit(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] as N x H x W x 3 float32 in [0, 1]."""
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def grid_for(side: int) -> int:
    return next(g for g in (4, 2, 1) if side % g == 0)
