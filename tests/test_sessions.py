"""Sign-in and its credentials: sessions live on the server and end at sign-out, idle or absolute expiry; API
tokens expire; guessing is throttled per account and per address; trivial passwords are refused; and the
messages do not say which accounts exist."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select, update

from service.auth.passwords import check_password
from service.errors import Invalid
from service.models import ApiToken, CredentialKind, Role
from service.timeutil import utcnow
from tests.factories import PASSWORD, create_call, create_proposal, create_user, post_form, signed_up


def _sign_in(client: TestClient, email: str, password: str = PASSWORD):
    return post_form(client, "/login", {"email": email, "password": password}, follow_redirects=False)


def test_sign_out_ends_the_session_even_for_a_copied_cookie(lite_client: TestClient, lite_session: Session) -> None:
    user = create_user(lite_session)
    assert _sign_in(lite_client, user.email).status_code == 303
    copied = dict(lite_client.cookies)
    assert lite_client.get("/api/me").status_code == 200
    post_form(lite_client, "/logout")
    lite_client.cookies.clear()
    lite_client.cookies.update(copied)
    assert lite_client.get("/api/me").status_code == 401
    assert "Sign out" not in lite_client.get("/").text


def _age(session: Session, kind: CredentialKind, **times) -> None:
    session.exec(update(ApiToken).where(ApiToken.kind == kind).values(**times))
    session.commit()


def test_sessions_end_when_idle_and_at_their_absolute_limit(lite_client: TestClient, lite_session: Session) -> None:
    user = create_user(lite_session)
    _sign_in(lite_client, user.email)
    _age(lite_session, CredentialKind.web, last_used_at=utcnow() - timedelta(hours=9))
    assert lite_client.get("/api/me").status_code == 401  # idle for longer than 8 hours

    _sign_in(lite_client, user.email)
    assert lite_client.get("/api/me").status_code == 200
    _age(lite_session, CredentialKind.web, expires_at=utcnow() - timedelta(seconds=1))
    assert lite_client.get("/api/me").status_code == 401  # past the absolute limit, however busy


def test_use_keeps_a_session_alive(lite_client: TestClient, lite_session: Session) -> None:
    user = create_user(lite_session)
    _sign_in(lite_client, user.email)
    _age(lite_session, CredentialKind.web, last_used_at=utcnow() - timedelta(hours=7))
    assert lite_client.get("/api/me").status_code == 200
    lite_session.expire_all()
    token = lite_session.exec(select(ApiToken).where(ApiToken.kind == CredentialKind.web)).one()
    assert utcnow() - token.last_used_at < timedelta(minutes=1)


def test_api_tokens_expire(lite_client: TestClient, lite_session: Session) -> None:
    user = create_user(lite_session)
    issued = lite_client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD}).json()
    assert issued["expires_in_s"] == 30 * 24 * 3600
    headers = {"Authorization": f"Bearer {issued['token']}"}
    assert lite_client.get("/api/me", headers=headers).status_code == 200
    _age(lite_session, CredentialKind.api, expires_at=utcnow() - timedelta(seconds=1))
    response = lite_client.get("/api/me", headers=headers)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_a_session_cookie_is_not_a_bearer_token_and_back(lite_client: TestClient, lite_session: Session) -> None:
    user = create_user(lite_session)
    raw = lite_client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD}).json()["token"]
    lite_client.cookies.clear()
    import base64
    import json

    from itsdangerous import TimestampSigner  # forge a cookie naming the API token, with the real key

    cookie = TimestampSigner("test-secret").sign(base64.b64encode(json.dumps({"sid": raw}).encode())).decode()
    lite_client.cookies.set("observatory_session", cookie)
    assert lite_client.get("/api/me").status_code == 401


def test_guessing_is_throttled_per_account(lite_client: TestClient, lite_session: Session) -> None:
    user = create_user(lite_session)
    for _ in range(5):
        response = lite_client.post("/api/auth/login", json={"email": user.email, "password": "wrong guess"})
        assert response.status_code == 401
    locked = lite_client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    # An account that does not exist locks out the same way, so the lock-out reveals nothing.
    for _ in range(5):
        lite_client.post("/api/auth/login", json={"email": "nobody@example.org", "password": "wrong guess"})
    assert lite_client.post("/api/auth/login", json={"email": "nobody@example.org",
                                                     "password": "x"}).status_code == 429
    page = _sign_in(lite_client, user.email)
    assert page.status_code == 429 and "too many failed sign-ins" in page.text


def test_guessing_is_throttled_per_address(lite_client: TestClient, lite_session: Session) -> None:
    users = [create_user(lite_session) for _ in range(5)]
    for i in range(20):
        lite_client.post("/api/auth/login", json={"email": users[i % 5].email, "password": "wrong guess"})
    fresh = create_user(lite_session)
    response = lite_client.post("/api/auth/login", json={"email": fresh.email, "password": PASSWORD})
    assert response.status_code == 429


def test_a_success_clears_the_accounts_failures(lite_client: TestClient, lite_session: Session) -> None:
    user = create_user(lite_session)
    for _ in range(3):
        lite_client.post("/api/auth/login", json={"email": user.email, "password": "wrong guess"})
    assert lite_client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD}).status_code == 200
    for _ in range(4):
        lite_client.post("/api/auth/login", json={"email": user.email, "password": "wrong guess"})
    assert lite_client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD}).status_code == 200


@pytest.mark.parametrize("password", ["        ", "12345678", "1234567890", "password123", "aaaaaaaaaaaa",
                                      "qwertyuiop", "observatory1", "ana@example.org"])
def test_trivial_and_common_passwords_are_refused(password: str) -> None:
    with pytest.raises(Invalid, match="password"):
        check_password(password, email="ana@example.org", name="Ana")


def test_a_good_password_passes() -> None:
    check_password("amber kettle orbit", email="ana@example.org", name="Ana")


@pytest.mark.parametrize("length", [72, 73, 100, 200])
def test_long_passphrases_are_judged_and_taken(lite_client: TestClient, length: int) -> None:
    """zxcvbn refuses more than 72 characters; sign-up judged the first 100 and answered 500 for 73 to 200."""
    phrase = ("amber kettle orbit tundra violin " * 7)[:length]
    check_password(phrase, email="ana@example.org", name="Ana")
    signed_up(lite_client, f"long{length}@example.org", "Long", phrase)
    with pytest.raises(Invalid, match="password"):
        check_password("a" * length, email="ana@example.org", name="Ana")


def test_sign_up_and_invites_do_not_say_which_accounts_exist(lite_client: TestClient,
                                                                lite_session: Session) -> None:
    existing = create_user(lite_session)
    reviewer = create_user(lite_session, Role.reviewer)
    taken = lite_client.post("/api/auth/signup", json={"email": existing.email, "name": "X",
                                                       "password": "amber kettle orbit"})
    assert taken.status_code == 409 and existing.email not in taken.text and "exists" not in taken.text

    pi = create_user(lite_session)
    proposal = create_proposal(lite_session, pi, create_call(lite_session, create_user(lite_session, Role.admin)))
    token = lite_client.post("/api/auth/login", json={"email": pi.email, "password": PASSWORD}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    answers = [lite_client.post(f"/api/proposals/{proposal.id}/invites", headers=headers, json={"email": email})
               for email in (reviewer.email, "nobody@example.org")]
    assert {a.status_code for a in answers} == {201}  # an invite goes to any address: nothing is looked up
    assert set(answers[0].json()) == set(answers[1].json())


def test_cookies_are_secure_unless_the_portal_is_plain_http_on_loopback(tmp_path) -> None:
    from service.config import Settings

    assert Settings(base_url="https://observatory.example.org").cookie_secure
    assert Settings(base_url="http://observatory.example.org").cookie_secure  # a proxy's TLS must be set up
    assert not Settings(base_url="http://127.0.0.1:8000").cookie_secure
    assert not Settings(base_url="http://127.0.0.1:8000", secure_cookies=None).cookie_secure
    assert Settings(base_url="http://127.0.0.1:8000", secure_cookies=True).cookie_secure


def test_the_session_cookie_is_secure_and_httponly_behind_https(lite_settings, lite_engine, lite_session) -> None:
    from web.app import create_app

    user = create_user(lite_session)
    settings = lite_settings.model_copy(update={"base_url": "https://observatory.example.org"})
    with TestClient(create_app(settings, lite_engine), base_url="https://observatory.example.org") as client:
        response = _sign_in(client, user.email)
        cookie = response.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def _link(session: Session, address: str) -> str:
    import re

    from service.models import OutboxMessage

    body = session.exec(select(OutboxMessage.body).where(OutboxMessage.to_address == address)
                        .order_by(OutboxMessage.id.desc())).first()
    return re.search(r"/verify/(ver_[\w-]+)", body).group(1)


def test_a_self_made_account_is_usable_only_once_its_address_is_confirmed(client: TestClient,
                                                                         session: Session) -> None:
    """Sign-up sends a link; until it is opened with the account's password, the password signs nobody in. A
    squatter who signs up with someone else's address cannot confirm it, and the owner's own sign-up takes the
    address back (the squatter's link dies with it)."""
    squat = client.post("/api/auth/signup", json={"email": "owner@example.org", "name": "Squatter",
                                                  "password": "squatter kettle orbit"})
    assert squat.status_code == 202
    session.rollback()
    squatter_link = _link(session, "owner@example.org")
    refused = client.post("/api/auth/login", json={"email": "owner@example.org", "password": "squatter kettle orbit"})
    assert refused.status_code == 403 and "confirm your e-mail address first" in refused.json()["detail"]
    # The owner signs up too: the same answer as for a new address, a new link, and the squatter's link is dead.
    owner = client.post("/api/auth/signup", json={"email": "owner@example.org", "name": "Owner",
                                                  "password": "amber kettle orbit"})
    assert owner.status_code == 202 and owner.json()["email"] == "owner@example.org"
    session.rollback()
    owner_link = _link(session, "owner@example.org")
    assert client.post("/api/auth/verify", json={"token": squatter_link, "password": "squatter kettle orbit"}
                       ).status_code == 404
    assert client.post("/api/auth/verify", json={"token": owner_link, "password": "squatter kettle orbit"}
                       ).status_code == 401
    confirmed = client.post("/api/auth/verify", json={"token": owner_link, "password": "amber kettle orbit"})
    assert confirmed.status_code == 200
    me = client.get("/api/me", headers={"Authorization": f"Bearer {confirmed.json()['token']}"}).json()
    assert me["name"] == "Owner"
    assert client.post("/api/auth/verify", json={"token": owner_link, "password": "amber kettle orbit"}
                       ).status_code == 404  # used once
    # Confirmed, the address is taken for good: signing up with it again says only that it cannot be done.
    again = client.post("/api/auth/signup", json={"email": "owner@example.org", "name": "Squatter",
                                                  "password": "squatter kettle orbit"})
    assert again.status_code == 409 and "cannot be made" in again.json()["detail"]
    assert client.post("/api/auth/login", json={"email": "owner@example.org",
                                                "password": "amber kettle orbit"}).status_code == 200
