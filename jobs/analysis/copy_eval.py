"""Copy detection evaluated as the DISC21 benchmark evaluates it (Douze et al. 2021): queries are edited copies of
some reference images and edits of images outside the references (distractors); a descriptor's predictions, the
`PER_QUERY` most similar references of each query with their scores, are ranked all together, and the micro-average
precision (muAP) is the area under that one precision-recall curve, recall counted over the queries that have a
match. A descriptor must therefore score true copies above every false match, across queries, not query by query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from jobs.analysis import augment

PER_QUERY = 10
PRECISION = 0.9  # the operating point: the lowest score at which the ranked predictions are still this precise


@dataclass(frozen=True)
class Benchmark:
    """References, and queries with the reference each copies (-1: a distractor, a copy of no reference)."""

    references: np.ndarray  # R x H x W x 3 in [0, 1]
    queries: np.ndarray  # Q x H x W x 3
    truth: np.ndarray  # Q


def edited(images: np.ndarray, seed: int) -> np.ndarray:
    """Each image (N x H x W x 3 in [0, 1]) through the copy edits (jobs.analysis.augment), from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return augment.copy_edits(tensor, generator).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def benchmark(held_out: np.ndarray, seed: int = 0) -> Benchmark:
    """Half of the held-out images are references; every held-out image gives one edited query, so half the queries
    copy a reference and half are distractors."""
    order = np.random.default_rng(seed).permutation(len(held_out))
    references = held_out[np.sort(order[: len(order) // 2])]
    reference_of = {int(i): n for n, i in enumerate(np.sort(order[: len(order) // 2]))}
    truth = np.array([reference_of.get(i, -1) for i in range(len(held_out))])
    return Benchmark(references, edited(held_out, seed), truth)


def micro_average_precision(scores: np.ndarray, truth: np.ndarray,
                            per_query: int = PER_QUERY) -> tuple[float, float | None, float]:
    """(muAP, the score at the operating point PRECISION, the recall there) of a Q x R score matrix; no operating
    point (None, recall 0) when even the best-scored prediction is wrong too often."""
    take = min(per_query, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :take]
    predicted = np.take_along_axis(scores, top, 1).ravel()
    correct = (top == truth[:, None]).ravel()
    order = np.argsort(-predicted, kind="stable")
    correct, predicted = correct[order], predicted[order]
    positives = max(int((truth >= 0).sum()), 1)
    hits = np.cumsum(correct)
    precision = hits / np.arange(1, len(correct) + 1)
    muap = float((precision * correct).sum() / positives)
    precise = np.flatnonzero((precision >= PRECISION) & correct)
    if len(precise) == 0:
        return muap, None, 0.0
    last = int(precise[-1])
    return muap, float(predicted[last]), float(hits[last] / positives)


def evaluate(describe: Callable[[np.ndarray], np.ndarray], bench: Benchmark) -> dict[str, float | int | None]:
    """A descriptor (images -> unit vectors) on a benchmark: muAP, and its operating threshold and recall."""
    scores = describe(bench.queries) @ describe(bench.references).T
    muap, threshold, recall = micro_average_precision(scores, bench.truth)
    return {"muap": muap, "threshold": threshold, "recall_at_threshold": recall,
            "queries": int(len(bench.truth)), "references": int(len(bench.references))}
