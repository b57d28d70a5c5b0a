"""Copy detection evaluated as the DISC21 benchmark evaluates it (Douze et al. 2021): queries are edited copies of
some reference images and edits of images outside the references (distractors); a descriptor's predictions, the
`PER_QUERY` most similar references of each query with their scores, are ranked all together, and the micro-average
precision (muAP) is the area under that one precision-recall curve, recall counted over the queries that have a
match. A descriptor must therefore score true copies above every false match, across queries, not query by query.

Beside the raw similarity, a normalised score after SSCD's (Pizzi et al. 2022): a query's similarity to a reference
less its best similarity to any other reference. A flat patch of sky is very similar to many pictures, so its score
falls to nothing; a true copy stands out. The operating threshold is set on this score, above every false match
measured (a distractor's best match, or a copy matched to the wrong reference); the copy searches compute the score
the same way (a sample's nearest training image against its nearest in another near-duplicate cluster).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from jobs.analysis import augment

PER_QUERY = 10
EDITS = 4  # edited queries made from each held-out image


@dataclass(frozen=True)
class Benchmark:
    """References, and queries with the reference each copies (-1: a distractor, a copy of no reference)."""

    references: np.ndarray  # R x H x W x 3 in [0, 1]: originals of some queries, and pictures of no query
    queries: np.ndarray  # Q x H x W x 3
    truth: np.ndarray  # Q


def edited(images: np.ndarray, seed: int) -> np.ndarray:
    """Each image (N x H x W x 3 in [0, 1]) through the copy edits (jobs.analysis.augment), from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return augment.copy_edits(tensor, generator).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def benchmark(held_out: np.ndarray, background: np.ndarray, seed: int = 0, edits: int = EDITS) -> Benchmark:
    """Half of the held-out images are references, beside the `background` pictures (as DISC21's reference set
    holds many pictures no query copies); every held-out image gives `edits` differently edited queries, so half
    the queries copy a reference and half are distractors."""
    order = np.random.default_rng(seed).permutation(len(held_out))
    references = held_out[np.sort(order[: len(order) // 2])]
    reference_of = {int(i): n for n, i in enumerate(np.sort(order[: len(order) // 2]))}
    truth = np.array([reference_of.get(i, -1) for i in range(len(held_out))] * edits)
    queries = np.concatenate([edited(held_out, seed * 1000 + n) for n in range(edits)])
    return Benchmark(np.concatenate([references, background.reshape(-1, *held_out.shape[1:])]), queries, truth)


def normalised(scores: np.ndarray) -> np.ndarray:
    """Each query's score for each reference (Q x R) less its best score for any other reference: positive only
    for a query's most similar reference, by its margin over the next."""
    if scores.shape[1] < 2:
        return scores
    ordered = np.sort(scores, axis=1)
    best, second = ordered[:, -1:], ordered[:, -2:-1]
    return scores - np.where(scores >= best, second, best)


def micro_average_precision(scores: np.ndarray, truth: np.ndarray, per_query: int = PER_QUERY) -> float:
    """The muAP of a Q x R score matrix: each query's `per_query` best-scored references, ranked all together."""
    take = min(per_query, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :take]
    predicted = np.take_along_axis(scores, top, 1).ravel()
    correct = (top == truth[:, None]).ravel()
    order = np.argsort(-predicted, kind="stable")
    correct = correct[order]
    positives = max(int((truth >= 0).sum()), 1)
    precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    return float((precision * correct).sum() / positives)


def operating_point(margins: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(threshold, recall): the highest normalised score of a wrong best match (a distractor's, or a copy matched
    to another reference), so that no false match measured reaches it, and the share of copies above it."""
    best = margins.argmax(axis=1)
    score = margins[np.arange(len(margins)), best]
    right = best == truth
    threshold = float(score[~right].max()) if (~right).any() else 0.0
    copies = max(int((truth >= 0).sum()), 1)
    return threshold, float((right & (score > threshold)).sum() / copies)


def evaluate(describe: Callable[[np.ndarray], np.ndarray], bench: Benchmark) -> dict[str, float | int | None]:
    """A descriptor (images -> unit vectors) on a benchmark: muAP on the raw similarity and on the normalised
    score, and the operating point (on the normalised score) with the recall there."""
    scores = describe(bench.queries) @ describe(bench.references).T
    margins = normalised(scores)
    muap, muap_normalised = micro_average_precision(scores, bench.truth), micro_average_precision(margins, bench.truth)
    threshold, recall = operating_point(margins, bench.truth)
    return {"muap": muap, "muap_normalised": muap_normalised, "threshold": threshold,
            "recall_at_threshold": recall, "queries": int(len(bench.truth)),
            "references": int(len(bench.references))}
