"""Reviewer assignment, pure: N reviewers per proposal, loads balanced, a cap per reviewer, conflicts excluded.

The chair's forced pairs come first (never past a conflict or the cap). Then one assignment at a time: the
least-loaded reviewer who can still take something takes the proposal that has the fewest eligible reviewers left,
so that hard-to-place proposals are served before easy ones use their reviewers up, and loads stay within one of
each other where conflicts allow. Expertise decides among equals: of reviewers with the same load, the one whose
best match among the proposals still in need scores highest goes first (then by id), and takes, among proposals
equally hard to place, the one it matches best. What cannot be met (too few eligible reviewers under the cap) is
returned as a shortfall for the chair to see.
"""

from __future__ import annotations

from collections.abc import Iterable


def plan(proposals: Iterable[int], reviewers: Iterable[int], excluded: set[tuple[int, int]],
         current: dict[int, set[int]], load: dict[int, int], per_proposal: int, cap: int,
         score: dict[tuple[int, int], float] | None = None,
         forced: Iterable[tuple[int, int]] = ()) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """New (reviewer, proposal) pairs, and each proposal's shortfall. `current`: reviewers a proposal has (or had:
    a declared conflict stays here so it is not assigned again); `load`: each reviewer's assignments so far;
    `score`: how well a reviewer matches a proposal (expertise, bids; 0 when absent); `forced`: the chair's pairs."""
    score = score or {}
    reviewers = sorted(set(reviewers))
    have = {p: set(current.get(p, set())) for p in proposals}
    needed = {p: per_proposal - len({r for r in have[p] if (r, p) not in excluded}) for p in have}
    load = {r: load.get(r, 0) for r in reviewers}
    pairs: list[tuple[int, int]] = []

    def fits(r: int, p: int) -> bool:
        return (r, p) not in excluded and r not in have[p] and load[r] < cap

    for r, p in forced:
        if r in load and p in have and needed[p] > 0 and fits(r, p):
            pairs.append((r, p))
            have[p].add(r)
            load[r] += 1
            needed[p] -= 1
    while True:
        needy = [p for p in have if needed[p] > 0]
        free = [r for r in reviewers if any(fits(r, p) for p in needy)]
        if not free:
            break
        r = min(free, key=lambda r: (load[r], -max(score.get((r, p), 0.0) for p in needy if fits(r, p)), r))
        p = min((p for p in needy if fits(r, p)), key=lambda p: (sum(fits(x, p) for x in reviewers),
                                                                 -score.get((r, p), 0.0), -needed[p], p))
        pairs.append((r, p))
        have[p].add(r)
        load[r] += 1
        needed[p] -= 1
    return pairs, {p: n for p, n in needed.items() if n > 0}
