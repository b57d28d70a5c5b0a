"""Cutting a dataset version into K clusters (the file format is jobs.partition).

Balanced k-means over the offline image descriptor (jobs.analysis.descriptors.features of each image at
DESCRIPTOR_SIDE pixels): seeded k-means++ starts, then rounds of a balanced assignment (every cluster takes ⌊N/K⌋
or ⌈N/K⌉ images, each image going to the nearest centre with room, closest pairs first) and centre updates, until
nothing moves. The same images, K and seed give the same assignment on any machine.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from PIL import Image

from jobs.analysis.descriptors import features
from jobs.partition import MAX_CLUSTERS, digest_of

DESCRIPTOR_SIDE = 32
DESCRIPTOR = f"features@{DESCRIPTOR_SIDE}px"
MAX_ROUNDS = 50


def descriptors(images: Iterable[bytes], progress: Callable[[int], None] | None = None) -> np.ndarray:
    """N x D descriptors of the encoded images, in order (decoded one at a time, in batches of 256)."""
    batch: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("RGB").resize((DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), Image.Resampling.BICUBIC)
        batch.append(np.asarray(small, dtype=np.float32) / 255.0)
        if len(batch) == 256:
            parts.append(features(np.stack(batch)))
            batch = []
            if progress:
                progress(256)
    if batch:
        parts.append(features(np.stack(batch)))
        if progress:
            progress(len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)


def _balanced_assignment(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each point to a centre, every centre taking ⌊N/K⌋ or ⌈N/K⌉ points: all (point, centre) pairs are taken in
    order of distance (ties by index), and a pair is kept when its point is free and its centre has room."""
    count, k = len(points), len(centres)
    room = np.full(k, count // k)
    room[: count % k] += 1
    distances = (points ** 2).sum(axis=1)[:, None] - 2 * points @ centres.T + (centres ** 2).sum(axis=1)[None, :]
    order = np.argsort(distances, axis=None, kind="stable")
    assignment = np.full(count, -1)
    left = count
    for flat in order:
        point, centre = divmod(int(flat), k)
        if assignment[point] < 0 and room[centre] > 0:
            assignment[point] = centre
            room[centre] -= 1
            left -= 1
            if left == 0:
                break
    return assignment


def _starts(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: the first centre at random, each next one drawn in proportion to its squared distance."""
    chosen = [int(rng.integers(len(points)))]
    nearest = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        pick = int(rng.choice(len(points), p=nearest / total)) if total > 0 else int(rng.integers(len(points)))
        chosen.append(pick)
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    return points[chosen].copy()


def balanced_kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster of each point (0…k-1), balanced (see the module's docstring); deterministic for a seed."""
    if not 1 <= k <= min(MAX_CLUSTERS, len(points)):
        raise ValueError(f"cannot cut {len(points)} images into {k} clusters (1 to {min(MAX_CLUSTERS, len(points))})")
    points = points.astype(np.float64)
    centres = _starts(points, k, np.random.default_rng(seed))
    assignment = _balanced_assignment(points, centres)
    for _ in range(MAX_ROUNDS):
        centres = np.stack([points[assignment == c].mean(axis=0) for c in range(k)])
        moved = _balanced_assignment(points, centres)
        if np.array_equal(moved, assignment):
            break
        assignment = moved
    return assignment


def make(dataset_digest: str, records: list[dict[str, Any]], points: np.ndarray, k: int,
         seed: int) -> dict[str, Any]:
    """The partition of the images of `records` (manifest records, in the order of `points`)."""
    clusters = balanced_kmeans(points, k, seed)
    assignment = {str(record["image_sha256"]): int(cluster) for record, cluster in zip(records, clusters, strict=True)}
    if len(assignment) != len(records):
        raise ValueError("the dataset holds the same image twice; a partition names each image once")
    return {"dataset_digest": dataset_digest, "k": k, "seed": seed, "descriptor": DESCRIPTOR,
            "digest": digest_of(dataset_digest, k, seed, assignment), "assignment": assignment}


