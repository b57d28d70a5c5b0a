"""Cross-site requests are refused, every page carries its security headers, and an output never runs as the
portal: downloads are attachments unless they really are raster images."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from service.models import Proposal, ProposalInvite, ProposalMember, Role, Run
from tests.factories import (
    PASSWORD,
    archive_outputs,
    award,
    create_call,
    create_proposal,
    create_user,
    csrf_token,
    post_form,
)

EVIL = "https://evil.example"


def _sign_in(client: TestClient, user) -> None:
    client.cookies.clear()
    response = post_form(client, "/login", {"email": user.email, "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 303


@pytest.fixture
def pi_and_proposal(lite_session: Session):
    pi = create_user(lite_session)
    draft = create_proposal(lite_session, pi, create_call(lite_session, create_user(lite_session, Role.admin)),
                            submit=False)
    return pi, draft


def test_a_cross_site_form_post_is_refused(lite_client: TestClient, lite_session: Session, pi_and_proposal) -> None:
    pi, draft = pi_and_proposal
    victim = create_user(lite_session)
    _sign_in(lite_client, pi)
    token = csrf_token(lite_client)
    # The attacker's page cannot read the token: without it the browser's cookie is not enough.
    no_token = lite_client.post(f"/proposals/{draft.id}/invites", data={"email": victim.email})
    assert no_token.status_code == 403 and "reload the page" in no_token.text
    # Even with a token, a request whose Origin is another site is refused.
    foreign = lite_client.post(f"/proposals/{draft.id}/submit", data={"csrf_token": token}, headers={"Origin": EVIL})
    assert foreign.status_code == 403 and "cross-site request refused" in foreign.text
    referred = lite_client.post(f"/proposals/{draft.id}/submit", data={"csrf_token": token},
                                headers={"Referer": f"{EVIL}/page"})
    assert referred.status_code == 403
    lite_session.expire_all()
    assert lite_session.get(ProposalMember, (draft.id, victim.id)) is None
    assert lite_session.exec(select(ProposalInvite)).first() is None
    assert lite_session.get(Proposal, draft.id).state == "draft"
    # The portal's own form, from its own origin, goes through.
    mine = lite_client.post(f"/proposals/{draft.id}/submit", data={"csrf_token": token},
                            headers={"Origin": str(lite_client.base_url)}, follow_redirects=False)
    assert mine.status_code == 303


def test_login_csrf_is_refused(lite_client: TestClient, lite_session: Session) -> None:
    """An attacker's page cannot sign the visitor in to the attacker's account."""
    attacker = create_user(lite_session)
    lite_client.cookies.clear()
    response = lite_client.post("/login", data={"email": attacker.email, "password": PASSWORD},
                                follow_redirects=False)
    assert response.status_code == 403
    assert lite_client.get("/api/me").status_code == 401


def test_cookie_authenticated_api_writes_need_the_csrf_header(lite_client: TestClient, lite_session: Session,
                                                              pi_and_proposal) -> None:
    pi, draft = pi_and_proposal
    _sign_in(lite_client, pi)
    assert lite_client.get("/api/me").status_code == 200  # reading with the cookie is fine
    refused = lite_client.post(f"/api/proposals/{draft.id}/submit")
    assert refused.status_code == 403
    refused = lite_client.post(f"/api/proposals/{draft.id}/submit", headers={"X-CSRF-Token": "guess"})
    assert refused.status_code == 403
    allowed = lite_client.post(f"/api/proposals/{draft.id}/submit", headers={"X-CSRF-Token": csrf_token(lite_client)})
    assert allowed.status_code == 200, allowed.text


def test_bearer_tokens_need_no_csrf_token(lite_client: TestClient, pi_and_proposal) -> None:
    pi, draft = pi_and_proposal
    lite_client.cookies.clear()
    token = lite_client.post("/api/auth/login", json={"email": pi.email, "password": PASSWORD}).json()["token"]
    response = lite_client.post(f"/api/proposals/{draft.id}/submit", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/", "/login", "/calls/1", "/api/calls", "/no-such-page", "/static/style.css"])
def test_every_response_carries_the_security_headers(lite_client: TestClient, path: str) -> None:
    headers = lite_client.get(path).headers
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"


def _output(lite_session, lite_settings, files: dict[str, bytes]) -> tuple[int, object]:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin)))
    archive_outputs(lite_session, lite_settings, lite_session.get(Run, run.id), files)
    return run.id, pi


def test_outputs_are_attachments_unless_they_really_are_raster_images(lite_client, lite_session,
                                                                      lite_settings) -> None:
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(document.cookie)</script></svg>"
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    run_id, pi = _output(lite_session, lite_settings, {"samples.png": svg, "training_images.png": png,
                                                       "metrics.json": b"{}"})
    _sign_in(lite_client, pi)
    disguised = lite_client.get(f"/api/runs/{run_id}/artifacts/samples.png")
    assert disguised.status_code == 200 and disguised.headers["content-disposition"].startswith("attachment")
    real = lite_client.get(f"/api/runs/{run_id}/artifacts/training_images.png")
    assert real.headers["content-disposition"].startswith("inline") and real.headers["content-type"] == "image/png"
    data = lite_client.get(f"/api/runs/{run_id}/artifacts/metrics.json")
    assert data.headers["content-disposition"].startswith("attachment")
    for response in (disguised, real, data):
        assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_an_svg_recorded_as_an_image_is_still_an_attachment(lite_client, lite_session, lite_settings) -> None:
    """Even an artifact row that says image/svg+xml (as archives made before declared outputs could) is not shown."""
    from service.models import Artifact

    run_id, pi = _output(lite_session, lite_settings, {"samples.png": b"<svg/>"})
    artifact = lite_session.exec(select(Artifact).where(Artifact.run_id == run_id,
                                                         Artifact.name == "samples.png")).one()
    artifact.media_type = "image/svg+xml"
    lite_session.add(artifact)
    lite_session.commit()
    _sign_in(lite_client, pi)
    response = lite_client.get(f"/api/runs/{run_id}/artifacts/samples.png")
    assert response.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in response.headers["content-security-policy"]
