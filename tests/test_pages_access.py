"""The portal's pages check who is asking, like the API: sign-in first, then role, then membership."""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session, select

from service.models import OutboxMessage, ReviewAssignment, Role, User
from tests.factories import (
    PASSWORD,
    award,
    create_call,
    create_machine,
    create_proposal,
    create_user,
    csrf_token,
    post_form,
    start_review,
)


@pytest.fixture
def world(lite_session: Session):
    admin, pi, other = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)
    reviewer, owner = create_user(lite_session, Role.reviewer), create_user(lite_session)
    call = create_call(lite_session, admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, call))
    machine, _ = create_machine(lite_session, owner, admin)
    reviewed = create_call(lite_session, admin, reviewers_per_proposal=1)
    create_proposal(lite_session, other, reviewed)
    start_review(lite_session, admin, reviewed)
    assignment = lite_session.exec(select(ReviewAssignment)).one()
    return ({"admin": admin, "pi": pi, "other": other, "reviewer": reviewer, "owner": owner},
            {"call": call.id, "proposal": run.proposal_id, "run": run.id, "machine": machine.id,
             "assignment": assignment.id, "reviewed": reviewed.id})


def _as(client: TestClient, user) -> TestClient:
    client.cookies.clear()
    if user is not None:
        response = post_form(client, "/login", {"email": user.email, "password": PASSWORD, "next": "/"},
                               follow_redirects=False)
        assert response.status_code == 303
    return client


@pytest.mark.parametrize(("method", "path", "who", "status"), [
    ("GET", "/proposals", None, 303),
    ("GET", "/proposals/{proposal}", None, 303),
    ("GET", "/proposals/{proposal}", "other", 404),
    ("GET", "/proposals/{proposal}", "reviewer", 404),
    ("GET", "/proposals/{proposal}", "pi", 200),
    ("GET", "/proposals/{proposal}", "admin", 200),
    ("GET", "/runs", None, 303),
    ("GET", "/runs", "other", 200),
    ("GET", "/runs/{run}", "other", 404),
    ("GET", "/runs/{run}", "pi", 200),
    ("POST", "/runs/{run}/cancel", "other", 303),  # refused with a message on the next page
    ("GET", "/calls/new", "pi", 403),
    ("GET", "/calls/new", "reviewer", 403),
    ("GET", "/calls/new", "admin", 200),
    ("GET", "/pool", None, 200),  # the public recruitment page
    ("GET", "/pool/nodes", "pi", 403),
    ("GET", "/pool/nodes", "admin", 200),
    ("GET", "/machines", None, 303),
    ("GET", "/machines", "pi", 200),
    ("GET", "/machines/{machine}", "pi", 404),
    ("GET", "/machines/{machine}", "owner", 200),
    ("GET", "/machines/{machine}", "admin", 200),
    ("POST", "/machines/{machine}/decision", "owner", 403),
    ("POST", "/machines/{machine}/join-command", "pi", 303),  # refused with a message on the next page
    ("GET", "/calls/{call}/propose", "admin", 403),
    ("GET", "/calls/{call}/propose", None, 303),
    ("GET", "/calls/{call}/propose", "pi", 200),
    ("POST", "/proposals/{proposal}/award", "pi", 403),
    ("GET", "/calls/{call}", None, 200),
    ("GET", "/", None, 200),
    ("GET", "/review", None, 303),
    ("GET", "/review", "pi", 403),
    ("GET", "/review", "reviewer", 200),
    ("GET", "/review/{assignment}", "reviewer", 200),
    ("GET", "/review/{assignment}", "admin", 404),
    ("GET", "/review/{assignment}", "other", 404),
    ("POST", "/review/{assignment}/accept", "pi", 303),  # refused with a message on the next page
    ("GET", "/calls/{reviewed}/ranking", None, 303),
    ("GET", "/calls/{reviewed}/ranking", "reviewer", 403),
    ("GET", "/calls/{reviewed}/ranking", "pi", 403),
    ("GET", "/calls/{reviewed}/ranking", "admin", 200),
    ("POST", "/calls/{reviewed}/release", "reviewer", 403),
    ("POST", "/calls/{call}/review", "pi", 403),
    ("POST", "/proposals/{proposal}/decline", "pi", 403),
    ("GET", "/accepted", None, 200),
    ("GET", "/reviewers", "reviewer", 403),
    ("GET", "/reviewers", "admin", 200),
    ("GET", "/audit", "pi", 403),
    ("GET", "/audit", "admin", 200),
    ("GET", "/invites/inv_made-up", None, 404),
    ("POST", "/proposals/{proposal}/invites", "other", 303),  # refused with a message on the next page
    ("POST", "/proposals/{proposal}/withdraw", "other", 303),
    ("GET", "/account", None, 303),
    ("GET", "/account", "reviewer", 200),
    ("GET", "/people", "pi", 403),
    ("GET", "/people", "admin", 200),
    ("POST", "/people/{machine}/roles", "reviewer", 403),
])
def test_page_access(world, lite_client: TestClient, method, path, who, status) -> None:
    people, ids = world
    client = _as(lite_client, people[who] if who else None)
    if method == "POST":
        response = post_form(client, path.format(**ids), follow_redirects=False)
    else:
        response = client.request(method, path.format(**ids), follow_redirects=False)
    assert response.status_code == status, response.text[:300]
    if status == 303 and who is None:
        assert response.headers["location"].startswith("/login")


def test_refused_cancel_leaves_the_run_alone(world, lite_client: TestClient, lite_session: Session) -> None:
    from service.models import Run

    people, ids = world
    client = _as(lite_client, people["other"])
    post_form(client, f"/runs/{ids['run']}/cancel")
    lite_session.rollback()  # end the read transaction: the next read sees what the server committed
    assert lite_session.get(Run, ids["run"]).state == "queued"


def test_loss_chart_scales_into_its_box() -> None:
    from web.charts import loss_chart

    chart = loss_chart([1.0, 0.1, 0.01], width=100, height=50, pad=0)
    assert chart["points"] == "0.0,0.0 50.0,25.0 100.0,50.0"
    assert loss_chart([1.0]) is None and loss_chart([float("nan"), 0.0]) is None


def test_portal_forms_open_a_call_and_sign_up(world, lite_client: TestClient) -> None:
    people, _ = world
    client = _as(lite_client, people["admin"])
    bad = post_form(client, "/calls/new", {"title": "Cycle 2", "opens_at": "2026-12-01T00:00",
                                          "closes_at": "2026-11-01T00:00", "capacity_gpu_hours": "10",
                                          "exclusive_months": "6"})
    assert bad.status_code == 422 and "closes_at must be after opens_at" in bad.text
    made = post_form(client, "/calls/new", {"title": "Cycle 2", "opens_at": "2026-11-01T00:00",
                                           "closes_at": "2036-11-01T00:00", "capacity_gpu_hours": "10",
                                           "exclusive_months": "6"}, follow_redirects=False)
    assert made.status_code == 303
    page = client.get(made.headers["location"]).text
    assert "Cycle 2" in page and "6 months after the award" in page

    client = _as(lite_client, None)
    short = post_form(client, "/signup", {"name": "N", "email": "n@example.org", "password": "short"})
    assert short.status_code == 422 and "at least 10 characters" in short.text
    joined = post_form(client, "/signup", {"name": "N", "email": "n@example.org", "password": "amber kettle orbit"},
                       follow_redirects=False)
    assert joined.status_code == 202 and "We sent a link to" in joined.text
    assert client.get("/api/me").status_code == 401  # not signed in until the address is confirmed
    with Session(lite_client.app.state.engine) as session:
        body = session.exec(select(OutboxMessage.body).where(OutboxMessage.to_address == "n@example.org")).one()
    link = re.search(r"(/verify/ver_[\w-]+)", body).group(1)
    assert "Confirm and sign in" in client.get(link).text
    wrong = post_form(client, link, {"password": "not the password"})
    assert wrong.status_code == 401 and client.get("/api/me").status_code == 401
    confirmed = post_form(client, link, {"password": "amber kettle orbit"}, follow_redirects=False)
    assert confirmed.status_code == 303 and client.get("/api/me").json()["roles"] == ["researcher"]


def test_people_and_account_pages_change_roles_and_institution(world, lite_client: TestClient,
                                                               lite_session: Session) -> None:
    people, _ = world
    client = _as(lite_client, people["admin"])
    response = client.post(f"/people/{people['other'].id}/roles",
                           data={"role": ["researcher", "reviewer"], "csrf_token": csrf_token(client)})
    assert response.status_code == 200 and "Roles saved" in response.text
    lite_session.rollback()
    assert lite_session.get(User, people["other"].id).roles == ["researcher", "reviewer"]
    client = _as(lite_client, people["other"])
    saved = post_form(client, "/account", {"name": "Other Person", "institution": "Lund"})
    assert "Saved." in saved.text
    lite_session.rollback()
    assert lite_session.get(User, people["other"].id).institution == "Lund"
    refused = post_form(client, "/account", {"name": "  ", "institution": "Lund"})
    assert 'class="flash error"' in refused.text and "name:" in refused.text
    lite_session.rollback()
    assert lite_session.get(User, people["other"].id).name == "Other Person"


def test_the_review_form_names_each_problem_at_its_field(world, lite_client: TestClient) -> None:
    people, ids = world
    client = _as(lite_client, people["reviewer"])
    post_form(client, f"/review/{ids['assignment']}/accept")
    response = post_form(client, f"/review/{ids['assignment']}", {"grade": "9", "expertise": "high",
                                                                  "for_committee": "Fine.", "for_pi": " "})
    assert response.status_code == 422
    assert response.text.count('aria-invalid="true"') == 2 and "Fine." in response.text  # what was typed stays
    saved = post_form(client, f"/review/{ids['assignment']}", {"grade": "2.5", "expertise": "high",
                                                               "for_committee": "Fine.", "for_pi": "Clear."})
    assert "Review saved" in saved.text and "Revise review" in saved.text


def test_pages_say_what_the_training_data_is(lite_client: TestClient) -> None:
    """The bundled set is scikit-image's samples (one from Commons): no page may call it, or the model, Commons."""
    home = lite_client.get("/").text
    assert "Wikimedia Commons images" not in home
    assert "<code>skimage-samples</code>, is not one of them" in home
    listing = lite_client.get("/datasets").text
    assert "scikit-image sample images <span class=\"muted\">(not a Commons dataset)</span>" in listing
    page = lite_client.get("/datasets/skimage-samples@1")
    assert page.status_code == 200 and "this is not a Commons dataset" in page.text
    assert "Every image came from Wikimedia Commons" not in page.text and "Stefan van der Walt" in page.text
    sheet = lite_client.get("/datasets/skimage-samples@1/sheet.png")
    assert sheet.status_code == 200 and sheet.content.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(sheet.content)) as image:
        assert image.size == (4 * 50 + 2, 3 * 50 + 2)  # twelve 48-pixel tiles, four to a row
    assert lite_client.get("/datasets/nothing@9").status_code == 404
    assert lite_client.get("/api/datasets/skimage-samples@1").json()["classes"] == [
        "drawing", "photograph", "scientific", "texture"]
