"""Near-duplicate clusters of a set of images: re-uploads, one photograph at several sizes, scans of one page, a
picture shifted by a pixel. The copy search counts and calibrates on clusters, not on identical bytes.

Two distinct images are near duplicates when, at some shift of at most `shift` pixels each way, every tile of their
overlap (a 4x4 grid) differs by at most `tolerance` root-mean-square, on a 0 to 1 scale. Each image is compared with
its NEIGHBOURS nearest by pixel L2 (exactly, or through the inverted-file index past `search.EXACT_LIMIT` images);
the clusters are the connected groups of near-duplicate pairs, each named by its first image.
"""

from __future__ import annotations

import numpy as np

from jobs.analysis import descriptors, search

NEIGHBOURS = 10  # candidates compared per image
GRID = 4
PAIRS_AT_ONCE = 2048  # pairs compared in one array (2048 pairs of 64x64 images: 200 MB of float64)


def shifted_rms(a: np.ndarray, b: np.ndarray, shift: int) -> np.ndarray:
    """For pairs of images (P x H x W x 3 each): the smallest, over shifts of b by at most `shift` pixels each way,
    of the largest tile RMS of their overlap, cut GRID x GRID (uneven tiles where the overlap does not divide)."""
    height, width = a.shape[1:3]
    best = np.full(len(a), np.inf)
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            top, left = max(dy, 0), max(dx, 0)
            rows, cols = height - abs(dy), width - abs(dx)
            if rows < GRID or cols < GRID:
                continue
            diff = a[:, top:top + rows, left:left + cols] - b[:, top - dy:top - dy + rows, left - dx:left - dx + cols]
            squared = (diff.astype(np.float64) ** 2).sum(-1)
            row_cuts = [int(part[0]) for part in np.array_split(np.arange(rows), GRID)]
            col_cuts = [int(part[0]) for part in np.array_split(np.arange(cols), GRID)]
            sums = np.add.reduceat(np.add.reduceat(squared, row_cuts, axis=1), col_cuts, axis=2)
            sizes = np.outer(np.diff([*row_cuts, rows]), np.diff([*col_cuts, cols])) * a.shape[3]
            best = np.minimum(best, np.sqrt(sums / sizes).max(axis=(1, 2)))
    return best


def candidates(images: np.ndarray, k: int) -> np.ndarray:
    """Each image's k nearest other images by pixel L2 (N x k indices; -1 where there are fewer)."""
    flat = descriptors.pixels(images)
    take = min(k + 1, len(images))
    if len(images) <= search.EXACT_LIMIT:
        _, nearest = search.topk_l2(flat, flat, take)
    else:
        index = search.IVFIndex(flat, cells=max(16, int(np.sqrt(len(images)))))
        _, nearest = index.search(flat, take, probes=8)
    out = np.full((len(images), k), -1, dtype=np.int64)
    for row, found in enumerate(nearest):
        others = [int(i) for i in found if i != row and i >= 0][:k]
        out[row, :len(others)] = others
    return out


def near_pairs(images: np.ndarray, tolerance: float, shift: int = 1) -> list[tuple[int, int, float]]:
    """The near-duplicate pairs among the images (N x H x W x 3 in [0, 1]): (a, b, their shifted tile RMS), a < b,
    in order."""
    if len(images) < 2:
        return []
    found = candidates(images, NEIGHBOURS)
    pairs = np.array(sorted({(min(a, int(b)), max(a, int(b))) for a, row in enumerate(found) for b in row
                             if b >= 0}), dtype=np.int64).reshape(-1, 2)
    out = []
    for start in range(0, len(pairs), PAIRS_AT_ONCE):
        chunk = pairs[start:start + PAIRS_AT_ONCE]
        rms = shifted_rms(images[chunk[:, 0]], images[chunk[:, 1]], shift)
        out += [(int(a), int(b), float(r)) for (a, b), r in zip(chunk, rms, strict=True) if r <= tolerance]
    return out


def clusters(images: np.ndarray, tolerance: float, shift: int = 1,
             pairs: list[tuple[int, int, float]] | None = None) -> np.ndarray:
    """The near-duplicate cluster of each image (N x H x W x 3 in [0, 1]): the index of its cluster's first
    image. An image with no near duplicate is a cluster of its own. `pairs`: the near pairs, if already found."""
    parent = np.arange(len(images))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b, _ in near_pairs(images, tolerance, shift) if pairs is None else pairs:
        low, high = sorted((root(a), root(b)))
        parent[high] = low
    return np.array([root(i) for i in range(len(images))], dtype=np.int64)
