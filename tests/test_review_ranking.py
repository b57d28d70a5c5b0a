"""The panel's arithmetic, pure: reviewer matching, normalisation, trimmed means, the triage line and grade bands."""

from __future__ import annotations

import random

import pytest

from service.review import matching
from service.review.ranking import Grade, band, normalise, rank, triage_line, trimmed_mean


def test_normalisation_and_ranking_on_a_worked_example() -> None:
    """Three reviewers grade four proposals. Harsh H grades 3, 4, 5; lenient L grades 1, 2, 3 on the same
    three; M grades 2 and 4. Panel: grades 3,4,5,1,2,3,2,4 -> mean 3.0, population sd 1.2247 (sqrt(1.5)).

    H: mean 4, sd 0.8165 -> 3 => 3 + 1.2247*(-1/0.8165) = 1.5; 4 => 3.0; 5 => 4.5.
    L: mean 2, same sd -> 1 => 1.5; 2 => 3.0; 3 => 4.5. So H and L agree exactly once normalised.
    M: mean 3, sd 1 -> 2 => 3 - 1.2247 = 1.7753; 4 => 4.2247.
    Proposals: A (H3, L1, M2) = (1.5 + 1.5 + 1.7753)/3 = 1.5918; B (H4, L2) = 3.0; C (H5, L3, M4) =
    (4.5 + 4.5 + 4.2247)/3 = 4.4082; D has no review and comes last.
    """
    H, L, M = 1, 2, 3
    A, B, C, D = 10, 20, 30, 40
    grades = [Grade(H, A, 3), Grade(H, B, 4), Grade(H, C, 5), Grade(L, A, 1), Grade(L, B, 2), Grade(L, C, 3),
              Grade(M, A, 2), Grade(M, C, 4)]
    normalised = normalise(grades)
    assert normalised[(H, A)] == pytest.approx(1.5) and normalised[(L, A)] == pytest.approx(1.5)
    assert normalised[(H, C)] == pytest.approx(4.5) and normalised[(L, C)] == pytest.approx(4.5)
    assert normalised[(M, A)] == pytest.approx(3 - 1.5 ** 0.5)
    ranked = rank([D, C, B, A], grades, triage_fraction=0.25)
    assert [r.proposal_id for r in ranked] == [A, B, C, D]
    assert [r.score for r in ranked[:3]] == pytest.approx([1.5918, 3.0, 4.4082], abs=1e-4)
    assert ranked[0].raw_mean == pytest.approx(2.0) and ranked[3].score is None and ranked[3].reviews == 0
    # Four proposals, a quarter below the line: only D.
    assert [r.triaged for r in ranked] == [False, False, False, True]
    # The harsh reviewer's 4 and the lenient one's 2 for B mean the same once normalised.
    assert normalised[(H, B)] == pytest.approx(normalised[(L, B)])


def test_a_reviewer_with_one_grade_is_only_shifted() -> None:
    grades = [Grade(1, 10, 2), Grade(1, 20, 4), Grade(2, 10, 5)]
    # Panel mean 11/3; reviewer 2's single grade 5 sits at its own mean, so it becomes the panel mean.
    assert normalise(grades)[(2, 10)] == pytest.approx(11 / 3)


def test_trimmed_mean_leaves_out_the_extremes_from_four_reviews() -> None:
    assert trimmed_mean([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    assert trimmed_mean([1.0, 2.0, 3.0, 5.0]) == pytest.approx(2.5)
    assert trimmed_mean([5.0, 1.0, 2.0, 2.0, 3.0]) == pytest.approx(7 / 3)


def test_triage_line_and_bands() -> None:
    assert triage_line(10, 0.3) == 7 and triage_line(3, 0.3) == 3 and triage_line(4, 0) == 4
    assert band(1.4, 1, 8) == "outstanding (1.4), top quarter of 8"
    assert band(3.6, 8, 8) == "fair (3.6), bottom quarter of 8"
    assert band(None, 3, 8) == "not graded"


def test_matching_excludes_conflicts_balances_loads_and_reports_shortfalls() -> None:
    reviewers = [1, 2, 3, 4]
    proposals = [10, 20, 30, 40]
    excluded = {(1, 10), (2, 10)}  # proposal 10 can only go to 3 and 4
    pairs, short = matching.plan(proposals, reviewers, excluded, {}, {}, per_proposal=2, cap=8)
    assert not set(pairs) & excluded
    assert {r for r, p in pairs if p == 10} == {3, 4}
    loads = [sum(1 for r, _ in pairs if r == x) for x in reviewers]
    assert sorted(loads) == [2, 2, 2, 2] and short == {}
    # A cap that cannot cover the need leaves a shortfall, never an excluded or doubled pair.
    pairs, short = matching.plan(proposals, reviewers, excluded, {}, {}, per_proposal=3, cap=2)
    assert len(pairs) == 8 and sum(short.values()) == 4 and len(set(pairs)) == 8
    assert not set(pairs) & excluded


def test_matching_keeps_loads_within_one_on_random_panels() -> None:
    rng = random.Random(7)
    for _ in range(50):
        reviewers = list(range(1, rng.randint(4, 12)))
        proposals = list(range(100, 100 + rng.randint(3, 30)))
        pairs, short = matching.plan(proposals, reviewers, set(), {}, {}, per_proposal=3, cap=100)
        loads = [sum(1 for r, _ in pairs if r == x) for x in reviewers]
        assert short == {} and max(loads) - min(loads) <= 1
        assert all(sum(1 for _, p in pairs if p == q) == 3 for q in proposals)
