"""Nearest-neighbour search over 100,000 training descriptors: exact brute force (blocked matrix products) versus
the inverted-file index, on the same data in the same run, with the index's recall against the exact answer.

    python bench/nn_search.py [--base 100000] [--queries 1000] [--dim 212] [--k 10] [--cells 256] [--probes 8]

The descriptors are clustered like real ones (points around a few hundred centres). Brute force over a batch of
queries is one blocked matrix product (shown in GFLOP/s); one query at a time it reads the whole base each time
(shown in GB/s, to compare with the machine's memory bandwidth). Ends with one line giving both rates and the
recall.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jobs.analysis.search import IVFIndex, norms, topk_l2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=212)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cells", type=int, default=256)
    parser.add_argument("--probes", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (500, args.dim)).astype(np.float32)
    base = centres[rng.integers(0, 500, args.base)] + rng.normal(0, 0.35, (args.base, args.dim)).astype(np.float32)
    queries = centres[rng.integers(0, 500, args.queries)] + rng.normal(0, 0.35, (args.queries, args.dim))
    queries = queries.astype(np.float32)

    started = time.perf_counter()
    _, exact = topk_l2(queries, base, args.k)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    index = IVFIndex(base, cells=args.cells, seed=0)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    _, found = index.search(queries, args.k, probes=args.probes)
    index_s = time.perf_counter() - started
    recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, exact, strict=True)]))
    singles = 20
    base_norms = norms(base)  # computed once, as a search service would keep them
    started = time.perf_counter()
    for query in queries[:singles]:
        topk_l2(query[None], base, args.k, base_norms=base_norms)
    single_s = (time.perf_counter() - started) / singles
    flops = 2 * args.queries * args.base * args.dim
    print(f"{args.base:,} descriptors of {args.dim} floats ({base.nbytes / 1e6:.0f} MB), {args.queries} queries, "
          f"top-{args.k}")
    print(f"exact brute force, batched: {exact_s:.2f} s ({flops / exact_s / 1e9:.0f} GFLOP/s); one query at a "
          f"time: {single_s * 1000:.1f} ms each ({base.nbytes / single_s / 1e9:.1f} GB/s of base read)")
    print(f"index: built in {build_s:.2f} s ({args.cells} cells); searched in {index_s:.2f} s with {args.probes} "
          f"probes")
    print(f"exact: {args.queries / exact_s:,.0f} queries/s; index: {args.queries / index_s:,.0f} queries/s; "
          f"recall@{args.k}: {recall:.3f}")


if __name__ == "__main__":
    main()
