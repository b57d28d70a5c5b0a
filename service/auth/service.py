"""Accounts, passwords (argon2), API tokens and OpenID Connect identities."""

from __future__ import annotations

import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlmodel import Session, select

from service.errors import Conflict, Invalid, Unauthenticated
from service.models import ApiToken, Role, User

_hasher = PasswordHasher()
ORCID_PATTERN = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")
# A real hash to verify against when the email is unknown, so both paths take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))


def _normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    session: Session, *, email: str, name: str, role: Role = Role.researcher, password: str | None = None
) -> User:
    email = _normalise_email(email)
    if "@" not in email:
        raise Invalid(f"{email!r} is not an email address")
    if password is not None and len(password) < 8:
        raise Invalid("a password needs at least 8 characters")
    if session.exec(select(User).where(User.email == email)).first():
        raise Conflict(f"an account for {email} already exists")
    user = User(email=email, name=name.strip() or email, role=role,
                password_hash=_hasher.hash(password) if password else None)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, *, email: str, password: str) -> User:
    user = session.exec(select(User).where(User.email == _normalise_email(email))).first()
    try:
        _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY_HASH, password)
    except (VerifyMismatchError, InvalidHashError):
        raise Unauthenticated("wrong email or password") from None
    if user is None or user.password_hash is None:
        raise Unauthenticated("wrong email or password")
    return user


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(session: Session, *, user: User) -> str:
    raw = "obs_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_token_hash(raw)))
    session.flush()
    return raw


def revoke_token(session: Session, *, raw: str) -> None:
    token = session.exec(select(ApiToken).where(ApiToken.token_hash == _token_hash(raw))).first()
    if token:
        session.delete(token)


def user_for_token(session: Session, raw: str) -> User | None:
    token = session.exec(select(ApiToken).where(ApiToken.token_hash == _token_hash(raw))).first()
    return session.get(User, token.user_id) if token else None


def user_for_oidc(session: Session, *, issuer: str, subject: str, email: str | None, name: str | None) -> User:
    """The account of an OIDC identity, created as a researcher on first sign-in.

    ORCID's subject is the researcher's iD, so a subject shaped like one is kept as `orcid`.
    """
    user = session.exec(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)).first()
    orcid = subject if ORCID_PATTERN.match(subject) else None
    if user is None:
        address = _normalise_email(email) if email else f"{subject}@{_host(issuer)}"
        if session.exec(select(User).where(User.email == address)).first():
            # Linking by email would let any provider that asserts an address take over a local account.
            raise Conflict(f"{address} already has an account here; sign in with its password")
        user = User(email=address, name=name or subject, role=Role.researcher,
                    oidc_issuer=issuer, oidc_subject=subject, orcid=orcid)
        session.add(user)
    elif orcid:
        user.orcid = orcid
    session.flush()
    return user


def _host(url: str) -> str:
    return re.sub(r"^https?://", "", url).split("/")[0] or "oidc"
