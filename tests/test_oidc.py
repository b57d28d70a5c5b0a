"""OpenID Connect sign-in against a local provider (oidc-provider-mock), as ORCID would do it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient
from oidc_provider_mock import User, run_server_in_thread

from web.app import create_app

ORCID_ID = "0000-0002-1825-0097"


@pytest.fixture(scope="module")
def provider():
    user = User(sub=ORCID_ID, claims={"email": "josiah@example.org", "name": "Josiah Carberry"})
    with run_server_in_thread(user_claims=[user]) as server:
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
    assert me == {**me, "email": "josiah@example.org", "name": "Josiah Carberry", "role": "researcher",
                  "orcid": ORCID_ID}
    assert "ORCID 0000-0002-1825-0097" in oidc_client.get("/").text

    oidc_client.post("/logout")
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
