"""Nearest-neighbour search: exact, in blocks of matrix products (numpy), and an inverted-file index for large
sets. Distances are Euclidean; on unit vectors the similarity is the dot product."""

from __future__ import annotations

import math

import numpy as np

BLOCK = 8192  # base vectors per block: the distance block stays a few tens of MB


def _merge(best_d: np.ndarray, best_i: np.ndarray, d: np.ndarray, offset: int, k: int,
           largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Merge a block's scores into the running top-k (smallest distances, or largest similarities)."""
    take = min(k, d.shape[1])
    part = np.argpartition(-d if largest else d, take - 1, axis=1)[:, :take]
    cand_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], axis=1)
    cand_i = np.concatenate([best_i, part + offset], axis=1)
    order = np.argsort(-cand_d if largest else cand_d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand_d, order, 1), np.take_along_axis(cand_i, order, 1)


def norms(base: np.ndarray) -> np.ndarray:
    """Each base vector's squared length, to be given to `topk_l2` when the same base is searched many times."""
    return np.einsum("ij,ij->i", base, base)


def rounding_bound(dim: int, largest_sq_norm: float, dtype: type = np.float64) -> float:
    """How far a distance computed as sqrt(|a|²+|b|²-2a·b) may lie from the true one through rounding alone.

    The squared distance is off by at most about (dim+2)·eps·(|a|²+|b|²), whatever order the BLAS kernel sums in
    (Higham's bound for a dot product, plus the two norms), so an image's distance to itself is at most the square
    root of that: 1e-7 is expected in float64 for a 48-dimensional tile, not 0.
    """
    return math.sqrt((dim + 2) * float(np.finfo(dtype).eps) * 2 * largest_sq_norm)


def topk_l2(queries: np.ndarray, base: np.ndarray, k: int, block: int = BLOCK,
            base_norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact: the k nearest base vectors of each query, (distances, indices), nearest first."""
    queries, base = queries.astype(np.float32, copy=False), base.astype(np.float32, copy=False)
    if base_norms is None:
        base_norms = norms(base)
    q_norm = (queries**2).sum(1, keepdims=True)
    best_d = np.full((len(queries), 0), np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(base), block):
        chunk = base[start:start + block]
        d = q_norm + base_norms[None, start:start + block] - 2 * queries @ chunk.T
        best_d, best_i = _merge(best_d, best_i, d, start, k, largest=False)
    return np.sqrt(np.maximum(best_d, 0)), best_i


def within_any(queries: np.ndarray, base: np.ndarray, radii: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """For each query, whether it lies within some base vector's ball (distance at most that vector's radius):
    in blocks, never the whole distance matrix at once."""
    queries, base = queries.astype(np.float32, copy=False), base.astype(np.float32, copy=False)
    base_norms, q_norm = norms(base), (queries**2).sum(1, keepdims=True)
    reach = np.asarray(radii, dtype=np.float32) ** 2
    inside = np.zeros(len(queries), dtype=bool)
    for start in range(0, len(base), block):
        d = q_norm + base_norms[None, start:start + block] - 2 * queries @ base[start:start + block].T
        inside |= (d <= reach[None, start:start + block]).any(axis=1)
    return inside


def topk_similarity(queries: np.ndarray, base: np.ndarray, k: int,
                    block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Exact: the k most similar unit base vectors of each unit query, (cosine similarities, indices)."""
    queries, base = queries.astype(np.float32), base.astype(np.float32)
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(base), block):
        best_s, best_i = _merge(best_s, best_i, queries @ base[start:start + block].T, start, k, largest=True)
    return best_s, best_i


def tiled_l2(queries: np.ndarray, base: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact tiled L2 (N x tiles x d arrays): the distance of two images is their largest tile distance. In
    float64, so that an image's distance to itself is far below any digit shown (see `rounding_bound`)."""
    queries, base = queries.astype(np.float64), base.astype(np.float64)
    best_d = np.full((len(queries), 0), np.inf, dtype=np.float64)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    q_norm = (queries**2).sum(2)  # N x tiles
    for start in range(0, len(base), block):
        chunk = base[start:start + block]
        worst = np.zeros((len(queries), len(chunk)), dtype=np.float64)
        for t in range(queries.shape[1]):
            d = q_norm[:, t:t + 1] + (chunk[:, t] ** 2).sum(1)[None, :] - 2 * queries[:, t] @ chunk[:, t].T
            np.maximum(worst, d, out=worst)
        best_d, best_i = _merge(best_d, best_i, worst, start, k, largest=False)
    return np.sqrt(np.maximum(best_d, 0)), best_i


class IVFIndex:
    """An inverted-file index: k-means cells over the base vectors; a query searches its `probes` nearest cells
    exactly. Deterministic given its seed."""

    def __init__(self, base: np.ndarray, cells: int, seed: int = 0, iterations: int = 10) -> None:
        self.base = base.astype(np.float32)
        rng = np.random.default_rng(seed)
        sample = self.base[rng.choice(len(self.base), size=min(len(self.base), cells * 40), replace=False)]
        centroids = sample[rng.choice(len(sample), size=cells, replace=False)].copy()
        for _ in range(iterations):
            _, nearest = topk_l2(sample, centroids, 1)
            for cell in range(cells):
                members = sample[nearest[:, 0] == cell]
                if len(members):
                    centroids[cell] = members.mean(0)
        self.centroids = centroids
        self.norms = norms(self.base)
        _, assigned = topk_l2(self.base, centroids, 1)
        order = np.argsort(assigned[:, 0], kind="stable")
        self.ids = order
        self.bounds = np.searchsorted(assigned[order, 0], np.arange(cells + 1))

    def search(self, queries: np.ndarray, k: int, probes: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Approximate: the k nearest base vectors of each query among its `probes` nearest cells. Cell by cell:
        the queries that probe a cell are compared with its members in one matrix product."""
        queries = queries.astype(np.float32)
        _, cells = topk_l2(queries, self.centroids, probes)
        best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
        best_i = np.full((len(queries), k), -1, dtype=np.int64)
        q_norm = (queries**2).sum(1)
        for cell in np.unique(cells):
            rows = np.nonzero((cells == cell).any(axis=1))[0]
            ids = self.ids[self.bounds[cell]:self.bounds[cell + 1]]
            if len(ids) == 0:
                continue
            d = q_norm[rows, None] + self.norms[ids][None, :] - 2 * queries[rows] @ self.base[ids].T
            take = min(k, len(ids))
            part = np.argpartition(d, take - 1, axis=1)[:, :take]
            cand_d = np.concatenate([best_d[rows], np.take_along_axis(d, part, 1)], axis=1)
            cand_i = np.concatenate([best_i[rows], ids[part]], axis=1)
            order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
            best_d[rows], best_i[rows] = np.take_along_axis(cand_d, order, 1), np.take_along_axis(cand_i, order, 1)
        return np.sqrt(np.maximum(best_d, 0)), best_i


EXACT_LIMIT = 20_000  # base sets up to this size are searched exactly; larger ones through the index
CANDIDATES = 256  # the pixel-space neighbours (found with the index) whose tiled distance is then computed


def tiled_nearest(queries: np.ndarray, base: np.ndarray, k: int, exact_limit: int = EXACT_LIMIT,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest base images by tiled L2 (N x tiles x d arrays): exact up to `exact_limit` base images;
    beyond, exact among each query's CANDIDATES nearest by pixel L2, found with an inverted-file index (a copy is
    near in pixel space too, so it is among them)."""
    if len(base) <= exact_limit:
        return tiled_l2(queries, base, k)
    flat_q, flat_b = queries.reshape(len(queries), -1), base.reshape(len(base), -1)
    index = IVFIndex(flat_b, cells=max(16, int(np.sqrt(len(base)))), seed=seed)
    _, candidates = index.search(flat_q, min(CANDIDATES, len(base)), probes=16)
    out_d = np.full((len(queries), k), np.inf)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    for row, ids in enumerate(candidates):
        ids = ids[ids >= 0]
        d, i = tiled_l2(queries[row:row + 1], base[ids], min(k, len(ids)))
        out_d[row, :d.shape[1]], out_i[row, :d.shape[1]] = d[0], ids[i[0]]
    return out_d, out_i
