"""Whatever comes in is checked before it reaches the database: ids in range, text without NUL, finite numbers,
bodies of a bounded size. A bad value is a 4xx that says what is wrong, never a 500, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from service.models import Award, Role
from tests.factories import PASSWORD, auth_headers, create_call, create_proposal, create_user, post_form

HUGE_ID = 2**63

ID_ROUTES = [
    ("GET", "/api/calls/{id}"), ("POST", "/api/calls/{id}/proposals"), ("GET", "/api/proposals/{id}"),
    ("PATCH", "/api/proposals/{id}"), ("POST", "/api/proposals/{id}/submit"), ("POST", "/api/proposals/{id}/invites"),
    ("POST", "/api/proposals/{id}/award"), ("GET", "/api/proposals/{id}/runs"), ("GET", "/api/runs/{id}"),
    ("POST", "/api/runs/{id}/cancel"), ("GET", "/api/runs/{id}/artifacts"), ("GET", "/api/runs/{id}/artifacts/x.png"),
    ("GET", "/calls/{id}"), ("GET", "/proposals/{id}"), ("GET", "/runs/{id}"),
]


@pytest.mark.parametrize("value", [HUGE_ID, 2**31, -1, 0])
def test_ids_out_of_range_are_refused_on_every_route(client: TestClient, session: Session, value: int) -> None:
    headers = auth_headers(session, create_user(session, Role.admin))
    for method, route in ID_ROUTES:
        response = client.request(method, route.format(id=value), headers=headers, json={})
        # Refused as not found, as malformed, or (before the id is looked at) for the caller's role: never a 5xx.
        assert response.status_code in (403, 404, 422), f"{method} {route}: {response.status_code} {response.text}"


def test_nul_and_control_characters_are_refused_everywhere(client: TestClient, session: Session) -> None:
    admin = create_user(session, Role.admin)
    researcher = create_user(session)
    call = create_call(session, admin)
    headers = auth_headers(session, researcher)
    body = {"title": "a\x00b", "abstract": "x", "justification": "y", "requested_gpu_hours": 1,
            "job_plan": {"kind": "train", "exclude_authors": ["Ada\x00"]}}
    response = client.post(f"/api/calls/{call.id}/proposals", headers=headers, json=body)
    assert response.status_code == 422 and "control characters" in response.json()["detail"]
    response = client.post(f"/api/calls/{call.id}/proposals", headers=headers, json={**body, "title": "ok"})
    assert response.status_code == 422 and "exclude_authors" in response.json()["detail"]
    for payload in ({"email": "a\x00@example.org", "name": "A", "password": "amber kettle orbit"},
                    {"email": "a@example.org", "name": "A\x00", "password": "amber kettle orbit"}):
        assert client.post("/api/auth/signup", json=payload).status_code == 422
    assert client.post("/api/auth/login", json={"email": "x\x00", "password": "p"}).status_code == 422
    proposal = create_proposal(session, researcher, call)
    response = client.post(f"/api/proposals/{proposal.id}/invites", headers=headers, json={"email": "\x00@a.b"})
    assert response.status_code == 422
    assert client.get("/api/runs/1/artifacts/a%00b").status_code in (404, 422)


def test_portal_sign_up_keeps_the_apis_limits(client: TestClient) -> None:
    response = post_form(client, "/signup", {"name": "N" * 5000, "email": "n@example.org",
                                              "password": "amber kettle orbit"})
    assert response.status_code == 422 and "name" in response.text
    response = post_form(client, "/signup", {"name": "N\x00", "email": "n@example.org",
                                              "password": "amber kettle orbit"})
    assert response.status_code == 422


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e309", "infinity", "0", "-1", "abc", "1e7"])
def test_the_award_form_refuses_what_is_not_a_finite_positive_number(client: TestClient, session: Session,
                                                                      raw: str) -> None:
    admin = create_user(session, Role.admin)
    proposal = create_proposal(session, create_user(session), create_call(session, admin))
    client.cookies.clear()
    post_form(client, "/login", {"email": admin.email, "password": PASSWORD})
    response = post_form(client, f"/proposals/{proposal.id}/award", {"gpu_hours": raw})
    assert response.status_code == 200 and "gpu_hours:" in response.text, response.text[:500]
    session.rollback()
    assert session.exec(select(Award)).all() == []


def test_the_api_refuses_nan_and_infinity(client: TestClient, session: Session) -> None:
    admin = create_user(session, Role.admin)
    proposal = create_proposal(session, create_user(session), create_call(session, admin))
    headers = {**auth_headers(session, admin), "content-type": "application/json"}
    for literal in ("NaN", "Infinity", "-Infinity", "1e309"):
        response = client.post(f"/api/proposals/{proposal.id}/award", headers=headers,
                               content=f'{{"gpu_hours": {literal}}}')
        assert response.status_code == 422, (literal, response.text)
    response = client.post("/api/calls", headers=headers, content='{"title": "t", "opens_at": "2026-01-01T00:00:00Z", '
                           '"closes_at": "2036-01-01T00:00:00Z", "capacity_gpu_hours": NaN}')
    assert response.status_code == 422


def test_bodies_over_the_limit_are_refused_before_they_are_read(lite_settings, lite_engine) -> None:
    from web.app import create_app

    settings = lite_settings.model_copy(update={"max_body_bytes": 4096, "max_form_bytes": 1024})
    with TestClient(create_app(settings, lite_engine)) as client:
        big = b'{"email": "' + b"a" * 10_000 + b'", "password": "x"}'
        response = client.post("/api/auth/login", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413 and response.headers["x-content-type-options"] == "nosniff"

        def chunks():
            yield b'{"email": "'
            for _ in range(10):
                yield b"a" * 1000
            yield b'", "password": "x"}'

        # Streamed without a length: counted as it arrives, refused once past the limit.
        response = client.post("/api/auth/login", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        response = client.post("/login", content=b"email=" + b"a" * 2000,
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413
        small = client.post("/api/auth/login", json={"email": "a@b.c", "password": "x"})
        assert small.status_code == 401
