"""Signing a browser in and out: the signed cookie names a portal session kept in the database."""

from __future__ import annotations

from fastapi import Request
from sqlmodel import Session

from service.auth.service import CredentialPolicy, issue_token, revoke_token
from service.models import CredentialKind, User


def sign_in_browser(request: Request, session: Session, user: User) -> None:
    """Start a new portal session for the user and commit it. Whatever the cookie held before is dropped, so a
    session id or CSRF token planted before sign-in is worth nothing after it."""
    raw = issue_token(session, user=user, kind=CredentialKind.web,
                      policy=CredentialPolicy.from_settings(request.app.state.settings))
    session.commit()
    request.session.clear()
    request.session["sid"] = raw


def sign_out_browser(request: Request, session: Session) -> None:
    """End the portal session in the database (a copy of the cookie is then worth nothing) and clear the cookie."""
    raw = request.session.get("sid")
    if isinstance(raw, str):
        revoke_token(session, raw=raw)
        session.commit()
    request.session.clear()
