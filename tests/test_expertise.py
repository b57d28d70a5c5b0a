"""Expertise in matching: an expert is chosen over a non-expert with the same load, conflicts still win over
expertise, bids count, and the chair sees the proposed pairs and forces or avoids one before the review starts."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from service.models import AuditEntry, ReviewAssignment, Role
from service.review import matching
from tests.factories import (
    auth_headers,
    close_call,
    create_call,
    create_proposal,
    create_user,
    portal_signed_in,
    post_form,
    start_review,
)


def test_the_expert_is_chosen_over_a_non_expert_with_the_same_load() -> None:
    score = {(2, 10): 2.0}  # reviewer 2 knows proposal 10's subject
    pairs, short = matching.plan([10], [1, 2], set(), {}, {}, per_proposal=1, cap=5, score=score)
    assert pairs == [(2, 10)] and short == {}
    pairs, _ = matching.plan([10], [1, 2], set(), {}, {}, per_proposal=1, cap=5)
    assert pairs == [(1, 10)]  # without the score, the lower id: the test can tell the two apart


def test_conflicts_still_win_over_expertise_and_loads_come_first() -> None:
    score = {(2, 10): 5.0, (2, 20): 5.0}
    pairs, _ = matching.plan([10], [1, 2], {(2, 10)}, {}, {}, per_proposal=1, cap=5, score=score)
    assert pairs == [(1, 10)]
    pairs, _ = matching.plan([10], [1, 2], {(2, 10)}, {}, {}, per_proposal=1, cap=5, score=score,
                             forced=[(2, 10)])
    assert pairs == [(1, 10)]  # a forced conflict is still a conflict
    # The expert already carries more load than the other: load balance decides, expertise only among equals.
    pairs, _ = matching.plan([10], [1, 2], set(), {}, {2: 1}, per_proposal=1, cap=5, score=score)
    assert pairs == [(1, 10)]


def test_scores_keep_loads_within_one_on_random_panels() -> None:
    rng = random.Random(11)
    for _ in range(40):
        reviewers = list(range(1, rng.randint(4, 10)))
        proposals = list(range(100, 100 + rng.randint(3, 20)))
        score = {(r, p): rng.choice((0.0, 1.0, 2.0, -3.0)) for r in reviewers for p in proposals}
        pairs, short = matching.plan(proposals, reviewers, set(), {}, {}, per_proposal=3, cap=100, score=score)
        loads = [sum(1 for r, _ in pairs if r == x) for x in reviewers]
        assert short == {} and max(loads) - min(loads) <= 1


def _panel_and_call(session: Session):  # noqa: ANN202
    admin = create_user(session, Role.admin)
    expert = create_user(session, Role.reviewer, name="Expert")
    other = create_user(session, Role.reviewer, name="Other")
    call = create_call(session, admin, reviewers_per_proposal=1)
    proposal = create_proposal(session, create_user(session), call, subject="Memorisation",
                               keywords=["diffusion", "Copy detection"])
    return admin, expert, other, call, proposal


def test_reviewers_keywords_and_bids_steer_the_review_and_the_chair_sees_and_changes_it(
        lite_client: TestClient, lite_session: Session) -> None:
    admin, expert, other, call, proposal = _panel_and_call(lite_session)
    assert proposal.keywords == ["diffusion", "copy detection"] and proposal.subject == "Memorisation"
    mine = lite_client.patch("/api/me", headers=auth_headers(lite_session, expert),
                             json={"expertise": ["Copy  Detection", "memorisation", "copy detection"]})
    assert mine.status_code == 200 and mine.json()["expertise"] == ["copy detection", "memorisation"]
    chair = auth_headers(lite_session, admin)
    bid_url = f"/api/review/bids/{proposal.id}"
    early = lite_client.put(bid_url, headers=auth_headers(lite_session, other), json={"bid": "eager"})
    assert early.status_code == 409 and "bidding opens at the call's deadline" in early.json()["detail"]
    close_call(lite_session, call)
    listed = lite_client.get(f"/api/calls/{call.id}/bidding", headers=auth_headers(lite_session, other)).json()
    assert [(r["title"], r["subject"], r["my_bid"]) for r in listed] == [(proposal.title, "Memorisation", None)]
    assert set(listed[0]) == {"proposal_id", "title", "abstract", "subject", "keywords", "my_bid"}  # no team
    assert lite_client.put(bid_url, headers=auth_headers(lite_session, other),
                           json={"bid": "not_my_field"}).status_code == 200
    shown = lite_client.get(f"/api/calls/{call.id}/matching", headers=chair).json()
    assert [(p["reviewer"], p["score"]) for p in shown["pairs"]] == [("Expert", 2.0)]
    assert lite_client.get(f"/api/calls/{call.id}/matching",
                           headers=auth_headers(lite_session, other)).status_code == 403
    # The chair swaps: the other reviewer forced on, the expert kept off.
    url = f"/api/calls/{call.id}/matching/choices"
    lite_client.put(url, headers=chair, json={"proposal_id": proposal.id, "reviewer_id": expert.id, "choice": "avoid"})
    swapped = lite_client.put(url, headers=chair, json={"proposal_id": proposal.id, "reviewer_id": other.id,
                                                        "choice": "force"}).json()
    assert [(p["reviewer"], p["forced"]) for p in swapped["pairs"]] == [("Other", True)]
    audited = lite_session.exec(select(AuditEntry).where(AuditEntry.action == "review.choice")).all()
    assert [e.detail["choice"] for e in audited] == ["avoid", "force"]
    lite_session.commit()
    start_review(lite_session, admin, call)
    assigned = lite_session.exec(select(ReviewAssignment.reviewer_id).where(
        ReviewAssignment.proposal_id == proposal.id)).all()
    assert assigned == [other.id]  # the chair's choice, over the expert
    closed = lite_client.put(bid_url, headers=auth_headers(lite_session, expert), json={"bid": "eager"})
    assert closed.status_code == 409 and "has started" in closed.json()["detail"]


def test_a_conflict_cannot_be_forced_and_bids_alone_decide_among_strangers(lite_client: TestClient,
                                                                            lite_session: Session) -> None:
    admin, expert, other, call, proposal = _panel_and_call(lite_session)
    lite_session.get(type(expert), expert.id).institution = "Utrecht"
    pi = lite_session.get(type(expert), proposal.pi_id)
    pi.institution = "utrecht"
    lite_session.commit()
    close_call(lite_session, call)
    chair = auth_headers(lite_session, admin)
    refused = lite_client.put(f"/api/calls/{call.id}/matching/choices", headers=chair,
                              json={"proposal_id": proposal.id, "reviewer_id": expert.id, "choice": "force"})
    assert refused.status_code == 409 and "same institution" in refused.json()["detail"]
    lite_client.put(f"/api/review/bids/{proposal.id}", headers=auth_headers(lite_session, other),
                    json={"bid": "eager"})
    shown = lite_client.get(f"/api/calls/{call.id}/matching", headers=chair).json()
    assert [(p["reviewer"], p["score"]) for p in shown["pairs"]] == [("Other", 2.0)]  # the expert is conflicted
    own = lite_client.put(f"/api/review/bids/{proposal.id}", headers=auth_headers(lite_session, pi),
                          json={"bid": "eager"})
    assert own.status_code in (403, 409)


@pytest.mark.parametrize("bad", [{"expertise": ["x" * 61]}, {"expertise": ["a"] * 21}, {"expertise": [""]}])
def test_expertise_is_checked(lite_client: TestClient, lite_session: Session, bad: dict) -> None:
    assert lite_client.patch("/api/me", headers=auth_headers(lite_session, create_user(lite_session)),
                             json=bad).status_code == 422


def test_a_reviewer_bids_and_the_chair_swaps_in_the_portal(lite_client: TestClient, lite_session: Session) -> None:
    admin, expert, other, call, proposal = _panel_and_call(lite_session)
    close_call(lite_session, call)
    portal_signed_in(lite_client, other)
    queue = lite_client.get("/review").text
    assert f'href="/calls/{call.id}/bidding"' in queue
    page = lite_client.get(f"/calls/{call.id}/bidding").text
    assert proposal.title in page and "copy detection" in page
    saved = post_form(lite_client, f"/calls/{call.id}/bidding/{proposal.id}", {"bid": "eager"})
    assert saved.status_code == 200 and "Bid saved: eager." in saved.text
    assert post_form(lite_client, f"/calls/{call.id}/bidding/{proposal.id}", {"bid": "maybe"}).status_code == 200
    portal_signed_in(lite_client, admin)
    assert f'href="/calls/{call.id}/matching"' in lite_client.get(f"/calls/{call.id}/ranking").text
    shown = lite_client.get(f"/calls/{call.id}/matching").text
    assert "Other" in shown and ">2<" in shown  # the eager bid's score
    swapped = post_form(lite_client, f"/calls/{call.id}/matching", {"proposal_id": str(proposal.id),
                                                                     "off": str(other.id), "on": str(expert.id)})
    assert "The assignments are changed" in swapped.text and "chosen" in swapped.text
    bad = post_form(lite_client, f"/calls/{call.id}/matching", {"proposal_id": "x", "off": "1"})
    assert bad.status_code == 200 and "proposal_id: which proposal" in bad.text


def test_a_proposal_names_its_subject_and_keywords_on_the_portal_form(lite_client: TestClient,
                                                                       lite_session: Session) -> None:
    from service.models import Proposal

    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    portal_signed_in(lite_client, pi)
    form = {"title": "Copies in the margins", "abstract": "A", "justification": "J", "requested_gpu_hours": "1",
            "subject": "Memorisation", "keywords": "diffusion, Copy  detection, diffusion", "job_kind": "train",
            "action": "submit"}
    sent = post_form(lite_client, f"/calls/{call.id}/propose", form)
    assert sent.status_code == 200 and "Proposal submitted." in sent.text, sent.text[-2000:]
    lite_session.commit()
    made = lite_session.exec(select(Proposal).where(Proposal.title == "Copies in the margins")).one()
    assert (made.subject, made.keywords) == ("Memorisation", ["diffusion", "copy detection"])
    edit = post_form(lite_client, f"/calls/{call.id}/propose", {**form, "keywords": "x" * 61, "action": "save"})
    assert edit.status_code == 422 and "keywords" in edit.text
