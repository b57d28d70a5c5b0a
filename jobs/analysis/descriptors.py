"""Image descriptors for finding a generated image's nearest training images, computed here, offline.

- `pixels`: the image itself, flattened (L2 distance in pixel space, values in [0, 1]).
- `tiles`: the image cut into a grid of tiles; the tiled L2 distance of two images is the *largest* of their tiles'
  L2 distances (Carlini et al. 2023), so a copy must match everywhere, not on average.
- `features`: a descriptor that sees structure rather than exact pixels: gradient-orientation histograms on a
  4x4 grid (HOG-like, 8 orientations, magnitude-weighted), a coarse colour layout (4x4 mean colour) and the
  lowest 2-D DCT coefficients of the grey image, each part L2-normalised, the whole L2-normalised, so that its
  dot product is a cosine similarity. Deterministic; nothing is downloaded.

Every function takes an N x H x W x 3 float32 array with values in [0, 1].
"""

from __future__ import annotations

import numpy as np

GRID = 4  # cells per side for the orientation histograms and the colour layout
ORIENTATIONS = 8
DCT_SIDE = 6  # the DCT block kept: DCT_SIDE x DCT_SIDE lowest frequencies


def pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32)


def tiles(images: np.ndarray, grid: int = GRID) -> np.ndarray:
    """N x grid² x (tile pixels): each image's tiles, flattened (the side must divide by `grid`)."""
    count, height, width, channels = images.shape
    if height % grid or width % grid:
        raise ValueError(f"images of {height}x{width} do not cut into a {grid}x{grid} grid")
    th, tw = height // grid, width // grid
    cut = images.reshape(count, grid, th, grid, tw, channels).transpose(0, 1, 3, 2, 4, 5)
    return cut.reshape(count, grid * grid, th * tw * channels).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    matrix = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


def features(images: np.ndarray) -> np.ndarray:
    """N x D unit vectors (see the module's docstring)."""
    count, height, width, _ = images.shape
    grey = images @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gy, gx = np.gradient(grey, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    bins = (np.floor((np.arctan2(gy, gx) % np.pi) / np.pi * ORIENTATIONS).astype(int)) % ORIENTATIONS
    ch, cw = height // GRID, width // GRID
    cell_y = np.minimum(np.arange(height) // max(ch, 1), GRID - 1)
    cell_x = np.minimum(np.arange(width) // max(cw, 1), GRID - 1)
    cell = (cell_y[:, None] * GRID + cell_x[None, :])[None].repeat(count, 0)
    index = (np.arange(count)[:, None, None] * GRID * GRID + cell) * ORIENTATIONS + bins
    hog = np.bincount(index.ravel(), weights=magnitude.ravel(), minlength=count * GRID * GRID * ORIENTATIONS)
    hog = hog.reshape(count, GRID * GRID, ORIENTATIONS)
    hog = _unit(np.sqrt(_unit(hog.reshape(count, -1))))  # square-rooted, as RootSIFT does
    layout = images[:, : ch * GRID, : cw * GRID].reshape(count, GRID, ch, GRID, cw, 3).mean(axis=(2, 4))
    layout = _unit(layout.reshape(count, -1) - 0.5)
    rows, cols = _dct_matrix(height)[:DCT_SIDE], _dct_matrix(width)[:DCT_SIDE]
    dct = np.einsum("ih,nhw,jw->nij", rows, grey - grey.mean(axis=(1, 2), keepdims=True), cols)
    dct = _unit(dct.reshape(count, -1))
    return _unit(np.concatenate([hog, 0.7 * layout, 0.7 * dct], axis=1)).astype(np.float32)
