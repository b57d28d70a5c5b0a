"""The panel's ranking, pure: normalise each reviewer's grades, take a trimmed mean, draw the triage line.

Grades run from 1.0 (best) to 5.0. A harsh reviewer (all 4s) and a lenient one (all 2s) mean the same by their
best and their worst, so each reviewer's grades are mapped onto the panel's scale first:

    normalised = panel mean + panel spread × (grade − reviewer's mean) / reviewer's spread

(spreads are population standard deviations over the call). A reviewer with one grade, or all grades equal, is
only shifted by the difference of means. A proposal's score is the mean of its normalised grades, leaving out the
best and the worst when it has four or more. Proposals are ranked by score (then by raw mean, then by number);
those with no review come last. The bottom `triage_fraction` of the ranking lies below the triage line.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean, pstdev


@dataclass(frozen=True)
class Grade:
    reviewer_id: int
    proposal_id: int
    grade: float


@dataclass(frozen=True)
class Ranked:
    proposal_id: int
    position: int
    score: float | None  # normalised, trimmed mean
    raw_mean: float | None
    reviews: int
    triaged: bool


def normalise(grades: list[Grade]) -> dict[tuple[int, int], float]:
    """Each (reviewer, proposal) grade on the panel's scale."""
    if not grades:
        return {}
    panel_mean, panel_sd = fmean(g.grade for g in grades), pstdev(g.grade for g in grades)
    by_reviewer: dict[int, list[Grade]] = defaultdict(list)
    for g in grades:
        by_reviewer[g.reviewer_id].append(g)
    out = {}
    for reviewer_grades in by_reviewer.values():
        mean = fmean(g.grade for g in reviewer_grades)
        sd = pstdev(g.grade for g in reviewer_grades)
        for g in reviewer_grades:
            if len(reviewer_grades) >= 2 and sd > 0 and panel_sd > 0:
                value = panel_mean + panel_sd * (g.grade - mean) / sd
            else:
                value = g.grade - mean + panel_mean
            out[(g.reviewer_id, g.proposal_id)] = value
    return out


def trimmed_mean(values: list[float]) -> float:
    ordered = sorted(values)
    return fmean(ordered[1:-1] if len(ordered) >= 4 else ordered)


def triage_line(count: int, triage_fraction: float) -> int:
    """The last position above the line."""
    return count - math.floor(count * triage_fraction + 1e-9)


def rank(proposal_ids: list[int], grades: list[Grade], triage_fraction: float) -> list[Ranked]:
    normalised = normalise(grades)
    per: dict[int, list[float]] = defaultdict(list)
    raw: dict[int, list[float]] = defaultdict(list)
    for g in grades:
        per[g.proposal_id].append(normalised[(g.reviewer_id, g.proposal_id)])
        raw[g.proposal_id].append(g.grade)
    scored = {pid: (trimmed_mean(per[pid]), fmean(raw[pid])) for pid in proposal_ids if per[pid]}
    order = sorted(proposal_ids, key=lambda pid: (pid not in scored, *scored.get(pid, (0.0, 0.0)), pid))
    line = triage_line(len(order), triage_fraction)
    return [Ranked(proposal_id=pid, position=i, score=scored[pid][0] if pid in scored else None,
                   raw_mean=scored[pid][1] if pid in scored else None, reviews=len(per[pid]), triaged=i > line)
            for i, pid in enumerate(order, start=1)]


BANDS = ((1.5, "outstanding"), (2.5, "excellent"), (3.5, "good"), (4.5, "fair"), (math.inf, "poor"))


def band(score: float | None, position: int, count: int) -> str:
    """The grade band a PI is told: the score's word and the quarter of the ranking it fell in."""
    if score is None:
        return "not graded"
    word = next(name for limit, name in BANDS if score <= limit)
    middle = (position - 0.5) / count  # where the proposal's place in the ranking lies, 0 (top) to 1
    quarter = ("top quarter", "second quarter", "third quarter", "bottom quarter")[min(3, int(middle * 4))]
    return f"{word} ({score:.1f}), {quarter} of {count}"
