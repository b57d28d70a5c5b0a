"""Check-then-write under real concurrency, over HTTP, on SQLite and PostgreSQL: the call's capacity holds, a
proposal is awarded and submitted once, an edit never lands after submission, and a lost race is a 409."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import httpx
import pytest
from sqlmodel import Session, select

from service.models import Award, CallKind, Proposal, Role
from tests.factories import auth_headers, create_call, create_cycle, create_proposal, create_user, start_review
from tests.live import live_server


@pytest.fixture
def server(settings, engine):
    with live_server(settings, engine) as url:
        yield url


def _race(requests: list[tuple[str, str, dict, dict | None]]) -> list[httpx.Response]:
    """Send the requests at the same moment, one thread each."""
    barrier = Barrier(len(requests))

    def send(request: tuple[str, str, dict, dict | None]) -> httpx.Response:
        method, url, headers, body = request
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            return client.request(method, url, headers=headers, json=body)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def _fresh(session: Session) -> None:
    """Forget what this session read: the server's commits are what counts."""
    session.rollback()
    session.expire_all()


def _statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def test_concurrent_awards_stay_within_the_calls_capacity(server: str, session: Session) -> None:
    admin = create_user(session, Role.admin)
    call = create_call(session, admin, capacity=5, triage_fraction=0)
    proposals = [create_proposal(session, create_user(session), call) for _ in range(10)]
    start_review(session, admin, call)
    headers = auth_headers(session, admin)
    responses = _race([("POST", f"{server}/api/proposals/{p.id}/award", headers, {"gpu_hours": 1})
                       for p in proposals])
    assert _statuses(responses) == Counter({201: 5, 409: 5}), [r.text for r in responses]
    assert all("GPU-hours left to award" in r.json()["detail"] for r in responses if r.status_code == 409)
    _fresh(session)
    awarded = session.exec(select(Award)).all()
    assert len(awarded) == 5 and sum(a.gpu_hours for a in awarded) == 5


def test_concurrent_directors_awards_stay_within_the_reserve(server: str, session: Session) -> None:
    """Two Director's Discretionary calls draw on one cycle's reserve of 4 GPU-hours: of ten awards of one GPU-hour
    made at once across both, four succeed, whatever the calls' own capacities."""
    admin = create_user(session, Role.admin)
    cycle = create_cycle(session, admin, capacity=40, reserve=4)
    calls = [create_call(session, admin, capacity=4, kind=CallKind.director, cycle_id=cycle.id) for _ in range(2)]
    proposals = [create_proposal(session, create_user(session), calls[i % 2]) for i in range(10)]
    headers = auth_headers(session, admin)
    responses = _race([("POST", f"{server}/api/proposals/{p.id}/award", headers, {"gpu_hours": 1})
                       for p in proposals])
    assert _statuses(responses) == Counter({201: 4, 409: 6}), [r.text for r in responses]
    assert all("Director's reserve" in r.json()["detail"] or "left to award" in r.json()["detail"]
               for r in responses if r.status_code == 409)
    _fresh(session)
    assert sum(a.gpu_hours for a in session.exec(select(Award))) == 4


def test_one_proposal_is_awarded_once(server: str, session: Session) -> None:
    admin = create_user(session, Role.admin)
    call = create_call(session, admin, capacity=100)
    proposal = create_proposal(session, create_user(session), call)
    start_review(session, admin, call)
    headers = auth_headers(session, admin)
    responses = _race([("POST", f"{server}/api/proposals/{proposal.id}/award", headers, {"gpu_hours": 1})] * 20)
    assert _statuses(responses) == Counter({201: 1, 409: 19}), [r.text for r in responses]
    _fresh(session)
    assert len(session.exec(select(Award)).all()) == 1


def test_a_draft_is_submitted_once_and_no_edit_lands_after(server: str, session: Session) -> None:
    pi = create_user(session)
    draft = create_proposal(session, pi, create_call(session, create_user(session, Role.admin)), submit=False)
    headers = auth_headers(session, pi)
    submits = [("POST", f"{server}/api/proposals/{draft.id}/submit", headers, None)] * 10
    edits = [("PATCH", f"{server}/api/proposals/{draft.id}", headers, {"title": f"edit {i}"}) for i in range(10)]
    responses = _race([r for pair in zip(submits, edits, strict=True) for r in pair])
    submitted = [r for r in responses[0::2] if r.status_code == 200]
    assert _statuses(responses[0::2]) == Counter({200: 1, 409: 9}), [r.text for r in responses[0::2]]
    assert set(_statuses(responses[1::2])) <= {200, 409}
    _fresh(session)
    stored = session.get(Proposal, draft.id)
    # What was submitted is what is stored: no edit was written after the submission.
    assert stored.state == "submitted" and stored.title == submitted[0].json()["title"]
