"""OpenID Connect sign-in against a local provider (oidc-provider-mock), as ORCID would do it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient
from oidc_provider_mock import User, run_server_in_thread
from sqlmodel import select

from service.db import session_scope
from service.models import OutboxMessage, Role
from service.proposals import team
from tests.factories import create_call, create_proposal, create_user, post_form
from web.app import create_app

ORCID_ID = "0000-0002-1825-0097"


@pytest.fixture(scope="module")
def provider():
    user = User(sub=ORCID_ID, claims={"email": "josiah@example.org", "email_verified": True,
                                      "name": "Josiah Carberry"})
    squatter = User(sub="squatter", claims={"email": "victim@example.org", "email_verified": False, "name": "S"})
    with run_server_in_thread(user_claims=[user, squatter]) as server:
        yield f"http://localhost:{server.server_port}"


def _sign_in(client: TestClient, provider: str, subject: str) -> httpx.Response:
    start = client.get("/auth/oidc/login", follow_redirects=False)
    assert start.status_code == 302 and start.headers["location"].startswith(provider)
    consent = httpx.post(start.headers["location"], data={"sub": subject}, follow_redirects=False)
    assert consent.status_code == 302
    back = urlparse(consent.headers["location"])
    assert back.path == "/auth/oidc/callback" and "code" in parse_qs(back.query)
    return client.get(f"{back.path}?{back.query}", follow_redirects=False)


@pytest.fixture
def oidc_client(provider, lite_settings, lite_engine):
    settings = lite_settings.model_copy(update={
        "oidc_server_metadata_url": f"{provider}/.well-known/openid-configuration",
        "oidc_client_id": "observatory", "oidc_client_secret": "observatory-secret",
        "oidc_scope": "openid email profile"})
    with TestClient(create_app(settings, lite_engine)) as client:
        yield client


def test_sign_in_creates_a_researcher_with_orcid(oidc_client: TestClient, provider: str) -> None:
    done = _sign_in(oidc_client, provider, ORCID_ID)
    assert done.status_code == 303 and done.headers["location"] == "/"
    me = oidc_client.get("/api/me").json()
    assert me == {**me, "email": "josiah@example.org", "name": "Josiah Carberry", "roles": ["researcher"],
                  "orcid": ORCID_ID}
    assert "ORCID 0000-0002-1825-0097" in oidc_client.get("/").text

    post_form(oidc_client, "/logout")
    assert oidc_client.get("/api/me").status_code == 401
    _sign_in(oidc_client, provider, ORCID_ID)  # the same identity comes back to the same account
    assert oidc_client.get("/api/me").json()["id"] == me["id"]


def test_a_non_orcid_subject_gets_no_orcid(oidc_client: TestClient, provider: str) -> None:
    _sign_in(oidc_client, provider, "someone@example.org")
    assert oidc_client.get("/api/me").json()["orcid"] is None


def test_forged_callback_is_refused(oidc_client: TestClient) -> None:
    response = oidc_client.get("/auth/oidc/callback?code=made-up&state=made-up")
    assert response.status_code == 422 and "sign-in with ORCID failed" in response.text


def test_oidc_off_when_not_configured(lite_client: TestClient) -> None:
    assert lite_client.get("/auth/oidc/login", follow_redirects=False).status_code == 404
    assert "Sign in with" not in lite_client.get("/login").text


def test_an_unverified_email_is_never_taken_or_matched(oidc_client: TestClient, provider: str) -> None:
    """A provider that does not vouch for an address cannot claim it: the owner can still sign up, and a PI who
    invites that address sends the link to the owner."""
    _sign_in(oidc_client, provider, "squatter")
    squatter = oidc_client.get("/api/me").json()
    assert squatter["email"] != "victim@example.org" and squatter["email"].startswith("squatter@")
    post_form(oidc_client, "/logout")

    owner = oidc_client.post("/api/auth/signup", json={"email": "victim@example.org", "name": "Owner",
                                                       "password": "amber kettle orbit"})
    assert owner.status_code == 202, owner.text
    with session_scope(oidc_client.app.state.engine) as session:
        pi = create_user(session)
        proposal = create_proposal(session, pi, create_call(session, create_user(session, Role.admin)))
        team.invite(session, actor=pi, proposal_id=proposal.id, email="victim@example.org", base_url="http://x")
        sent_to = session.exec(select(OutboxMessage.to_address).where(OutboxMessage.kind == "notice")).all()
        assert "victim@example.org" in sent_to and squatter["email"] not in sent_to


def test_a_squatted_unconfirmed_address_is_reclaimed_by_a_verified_sign_in(oidc_client: TestClient,
                                                                           provider: str) -> None:
    """Someone signs up locally with josiah@example.org and never confirms it (they cannot read his mail). Josiah
    then arrives through ORCID, whose provider vouches for the address: he gets it, the squat keeps nothing."""
    squat = oidc_client.post("/api/auth/signup", json={"email": "josiah@example.org", "name": "Not Josiah",
                                                       "password": "amber kettle orbit"})
    assert squat.status_code == 202
    assert oidc_client.post("/api/auth/login", json={"email": "josiah@example.org",
                                                     "password": "amber kettle orbit"}).status_code == 403
    done = _sign_in(oidc_client, provider, ORCID_ID)
    assert done.status_code == 303, done.text
    me = oidc_client.get("/api/me").json()
    assert me["email"] == "josiah@example.org" and me["orcid"] == ORCID_ID
    oidc_client.cookies.clear()  # as the squatter, with no session: the password opens nothing now
    assert oidc_client.post("/api/auth/login", json={"email": "josiah@example.org",
                                                     "password": "amber kettle orbit"}).status_code == 401
    with session_scope(oidc_client.app.state.engine) as session:
        from service.models import AuditEntry

        assert session.exec(select(AuditEntry).where(AuditEntry.action == "account.reclaimed")).first()
