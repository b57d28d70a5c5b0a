"""The JSON API's behaviour for people: clear 4xx messages, tokens, and the proposal flow."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from service.models import Proposal, Role
from tests.factories import close_call, create_call, create_user, login, proposal_body, signed_up


def test_signup_login_me_logout(lite_client: TestClient) -> None:
    confirmed = signed_up(lite_client, "Ana@Example.org", "Ana", "amber kettle orbit")
    assert lite_client.get("/api/me", headers=confirmed).json()["roles"] == ["researcher"]
    assert lite_client.post("/api/auth/signup", json={"email": "ana@example.org", "name": "A",
                                                      "password": "amber kettle orbit"}).status_code == 409
    assert lite_client.post("/api/auth/login", json={"email": "ana@example.org", "password": "nope"}).status_code == 401
    headers = login(lite_client, "ana@example.org", "amber kettle orbit")
    assert lite_client.get("/api/me", headers=headers).json()["email"] == "ana@example.org"
    assert lite_client.post("/api/auth/logout", headers=headers).status_code == 204
    assert lite_client.get("/api/me", headers=headers).status_code == 401


def test_bad_input_gets_a_message_not_a_500(lite_client: TestClient, lite_session: Session) -> None:
    admin = create_user(lite_session, Role.admin)
    researcher = create_user(lite_session)
    call = create_call(lite_session, admin)
    headers = login(lite_client, researcher.email)
    url = f"/api/calls/{call.id}/proposals"

    bad_plan = lite_client.post(url, headers=headers, json=proposal_body(job_plan={"kind": "train", "steps": -1}))
    assert bad_plan.status_code == 422 and "job_plan.train.steps" in bad_plan.json()["detail"]
    too_big = lite_client.post(url, headers=headers, json=proposal_body(requested_gpu_hours=50))
    assert too_big.status_code == 422 and "capacity" in too_big.json()["detail"]
    missing = lite_client.post(url, headers=headers, json={"title": "x"})
    assert missing.status_code == 422 and "abstract" in missing.json()["detail"]
    not_json = lite_client.post(url, headers={**headers, "content-type": "application/json"}, content=b"{nope")
    assert not_json.status_code == 422
    no_call = lite_client.post("/api/calls/999/proposals", headers=headers, json=proposal_body())
    assert no_call.status_code == 404 and "no call 999" in no_call.json()["detail"]
    assert lite_session.exec(select(func.count()).select_from(Proposal)).one() == 0

    bad_call = lite_client.post("/api/calls", headers=login(lite_client, admin.email), json={
        "title": "t", "opens_at": "2026-02-01T00:00:00Z", "closes_at": "2026-01-01T00:00:00Z",
        "capacity_gpu_hours": 5})
    assert bad_call.status_code == 422 and "closes_at must be after opens_at" in bad_call.json()["detail"]


def test_closed_call_is_a_conflict(lite_client: TestClient, lite_session: Session) -> None:
    admin, researcher = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin, open_now=False)
    response = lite_client.post(f"/api/calls/{call.id}/proposals", headers=login(lite_client, researcher.email),
                                json=proposal_body())
    assert response.status_code == 409 and "not open" in response.json()["detail"]


def test_proposal_flow_and_award(lite_client: TestClient, lite_session: Session) -> None:
    admin, researcher = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    pi = login(lite_client, researcher.email)
    draft = lite_client.post(f"/api/calls/{call.id}/proposals", headers=pi, json=proposal_body(submit=False)).json()
    assert draft["state"] == "draft"
    edited = lite_client.patch(f"/api/proposals/{draft['id']}", headers=pi, json={"requested_gpu_hours": 2})
    assert edited.json()["requested_gpu_hours"] == 2
    submitted = lite_client.post(f"/api/proposals/{draft['id']}/submit", headers=pi).json()
    assert submitted["state"] == "submitted"
    chief = login(lite_client, admin.email)
    early = lite_client.post(f"/api/proposals/{draft['id']}/award", headers=chief, json={"gpu_hours": 1.5})
    assert early.status_code == 409 and "not under review" in early.json()["detail"]
    assert lite_client.post(f"/api/calls/{call.id}/review", headers=chief).status_code == 409  # still open
    close_call(lite_session, call)
    started = lite_client.post(f"/api/calls/{call.id}/review", headers=chief).json()
    assert started["proposals"] == 1
    awarded = lite_client.post(f"/api/proposals/{draft['id']}/award", headers=chief, json={"gpu_hours": 1.5})
    assert awarded.status_code == 201 and awarded.json()["award"]["gpu_hours"] == 1.5
    assert awarded.json()["state"] == "accepted"
    runs = lite_client.get(f"/api/proposals/{draft['id']}/runs", headers=pi).json()
    assert [r["state"] for r in runs] == ["queued"]
    listed = lite_client.get("/api/calls").json()
    assert listed[0]["awarded_gpu_hours"] == 1.5 and not listed[0]["is_open"]
    assert "train" in str(lite_client.get("/api/job-plans/schema").json())
