"""Accounts, passwords (argon2), credentials (API tokens and portal sessions) and OpenID Connect identities."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlmodel import Session, delete, select

from service.audit.service import record
from service.auth import throttle
from service.auth.passwords import check_password
from service.config import Settings
from service.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from service.mail import outbox
from service.models import SELF_SERVICE_ROLES, ApiToken, CredentialKind, Role, User
from service.review.assignments import recheck_for_person
from service.timeutil import utcnow
from service.types import clean_text, words

_hasher = PasswordHasher()
ORCID_PATTERN = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")
# A real hash to verify against when the email is unknown, so both paths take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))
WRONG_LOGIN = "wrong email or password"
# The same words whether the address is taken or not allowed, so that sign-up does not say which accounts exist.
CANNOT_SIGN_UP = "an account cannot be made with this email address; if it is yours, sign in instead"


class AccountExists(Conflict):
    pass


@dataclass(frozen=True)
class CredentialPolicy:
    """How long credentials live: web sessions end when idle or at their absolute limit; tokens at their limit."""

    session_idle: timedelta = timedelta(hours=8)
    session_max: timedelta = timedelta(days=7)
    token_max: timedelta = timedelta(days=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> CredentialPolicy:
        return cls(timedelta(hours=settings.session_idle_hours), timedelta(hours=settings.session_max_hours),
                   timedelta(days=settings.api_token_days))


def throttle_limits(settings: Settings) -> throttle.Limits:
    return throttle.Limits(settings.login_max_failures_per_account, settings.login_max_failures_per_address,
                           settings.login_lockout_minutes)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    session: Session, *, email: str, name: str, roles: Iterable[Role] = (Role.researcher,),
    password: str | None = None, institution: str = "", verified: bool = True
) -> User:
    """An account; `verified` says its address is known to be its holder's (an admin made it, or a provider
    vouched for it). A self-made account is not, until its holder opens the link sent there."""
    email = normalise_email(email)
    if "@" not in email:
        raise Invalid(f"{email!r} is not an email address")
    if password is not None:
        check_password(password, email=email, name=name)
    if session.exec(select(User).where(User.email == email)).first():
        raise AccountExists(f"an account for {email} already exists")
    user = User(email=email, name=name.strip() or email, roles=sorted({str(r) for r in roles}) or ["researcher"],
                password_hash=_hasher.hash(password) if password else None, institution=institution.strip(),
                email_verified=verified)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, *, email: str, password: str) -> User:
    """An operator resets an account's password; every session and token it had stops working."""
    user = session.exec(select(User).where(User.email == normalise_email(email))).first()
    if user is None:
        raise NotFound(f"no account for {email}")
    check_password(password, email=user.email, name=user.name)
    user.password_hash = _hasher.hash(password)
    session.add(user)
    session.exec(delete(ApiToken).where(ApiToken.user_id == user.id))
    session.flush()
    return user


def take_role(session: Session, user: User, role: Role) -> User:
    """A person adds a role to their own account: only the roles anyone may take (owner); the rest an admin gives."""
    if role not in SELF_SERVICE_ROLES:
        raise Forbidden(f"the role {role} is given by an admin; you may add only: "
                        f"{', '.join(sorted(SELF_SERVICE_ROLES))}")
    user = session.merge(user)
    if not user.has(role):
        user.roles = sorted({*user.roles, str(role)})
        session.add(user)
        session.flush()
        record(session, user, "role.take", f"user:{user.id}", role=str(role))
    return user


def set_roles(session: Session, *, actor: User | None, user_id: int, roles: Iterable[Role]) -> User:
    """An admin (or, with `actor` None, the operator at the command line) sets the roles a person holds, recorded
    in the audit log. An admin cannot drop their own admin role, so that the observatory is never left without one
    by accident."""
    if actor is not None and not actor.has(Role.admin):
        raise Forbidden("only admins give roles")
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    new = sorted({str(r) for r in roles})
    if not new:
        raise Invalid("roles: a person holds at least one role")
    if actor is not None and user.id == actor.id and str(Role.admin) not in new:
        raise Conflict("you cannot take your own admin role away; another admin can")
    before, user.roles = list(user.roles), new
    session.add(user)
    session.flush()
    record(session, actor, "role.set", f"user:{user.id}", before=before, after=new,
           by="" if actor else "the operator (command line)")
    return user


def update_profile(session: Session, user: User, *, name: str | None = None,
                   institution: str | None = None, expertise: list[str] | None = None) -> User:
    """A person's own name, institution (reviewers from a team member's institution are kept off a proposal) and
    expertise (a reviewer's keywords and subject areas, which matching prefers)."""
    user = session.merge(user)
    if name is not None:
        user.name = name.strip()
    if expertise is not None:
        user.expertise = words(expertise)
    moved = institution is not None and institution.strip() != (user.institution or "")
    if institution is not None:
        user.institution = institution.strip()
    session.add(user)
    session.flush()
    if moved:
        recheck_for_person(session, user=user, why="an institution changed")
    return user


VERIFY_PREFIX = "ver_"
VERIFY_HOURS = 48
UNVERIFIED_LOGIN = ("confirm your e-mail address first: open the link we sent to it (sign up again with the same "
                    "address for a new link)")


def sign_up(session: Session, *, email: str, name: str, password: str, institution: str = "",
            base_url: str = "http://127.0.0.1:8000") -> User:
    """A researcher signs themselves up: the account is usable once its holder opens the link e-mailed to the
    address (and gives the password again). Unlike an admin, they are not told whether the address has an account.

    An address held by an account that was never confirmed is not lost to a squatter: signing up with it again
    replaces that account's name and password and sends a new link (the old ones stop working), and only the one
    who can read the mail and knows the password confirms it."""
    email = normalise_email(email)
    existing = session.exec(select(User).where(User.email == email)).first()
    if existing is not None and (existing.email_verified or existing.password_hash is None):
        raise Conflict(CANNOT_SIGN_UP)
    if existing is None:
        user = create_user(session, email=email, name=name, password=password, institution=institution,
                           verified=False)
    else:
        check_password(password, email=email, name=name)
        user = existing
        user.name, user.institution = name.strip() or email, institution.strip()
        user.password_hash = _hasher.hash(password)
        session.exec(delete(ApiToken).where(ApiToken.user_id == user.id))  # old links and sessions end
        session.add(user)
        session.flush()
    send_verification(session, user, base_url=base_url)
    return user


def send_verification(session: Session, user: User, *, base_url: str) -> None:
    now = utcnow()
    raw = VERIFY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=token_hash(raw), kind=CredentialKind.verify, created_at=now,
                         last_used_at=now, expires_at=now + timedelta(hours=VERIFY_HOURS)))
    session.flush()
    outbox.queue(session, user.email, "Confirm your e-mail address for the Commons Observatory",
                 f"Someone (we hope you) made an account at the Commons Observatory with this address. To confirm "
                 f"it, open this link and give the password you chose (it works for {VERIFY_HOURS} hours):\n\n"
                 f"{base_url.rstrip('/')}/verify/{raw}\n\nIf it was not you, ignore this message: the account "
                 "cannot be used without it.")


def verify_email(session: Session, *, raw: str, password: str, address: str | None = None,
                 limits: throttle.Limits | None = None) -> User:
    """Confirm an account's address with the link sent there and the account's password; returns the account."""
    token = credential_for(session, raw, CredentialKind.verify) if raw.startswith(VERIFY_PREFIX) else None
    user = session.get(User, token.user_id) if token else None
    if user is None:
        raise NotFound("this link is not valid: it was used, replaced by a newer one or has expired; sign up again "
                       "with the same address for a new one")
    authenticate(session, email=user.email, password=password, address=address, limits=limits,
                 require_verified=False)
    user.email_verified = True
    session.exec(delete(ApiToken).where(ApiToken.user_id == user.id, ApiToken.kind == CredentialKind.verify))
    session.add(user)
    record(session, user, "account.verified", f"user:{user.id}")
    return user


def authenticate(session: Session, *, email: str, password: str, address: str | None = None,
                 limits: throttle.Limits | None = None, require_verified: bool = True) -> User:
    """The account for an email and password, or Unauthenticated. Refused (429) while the account or the client
    address is locked out after repeated failures; a failure is counted and committed before it is reported. An
    account whose address was never confirmed is refused (403) once its password is right."""
    email = normalise_email(email)
    limits = limits or throttle.Limits()
    throttle.check_allowed(session, email=email, address=address)
    user = session.exec(select(User).where(User.email == email)).first()
    try:
        _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY_HASH, password)
        if user is None or user.password_hash is None:
            raise VerifyMismatchError
    except (VerifyMismatchError, InvalidHashError):
        throttle.record_failure(session, email=email, address=address, limits=limits)
        raise Unauthenticated(WRONG_LOGIN) from None
    throttle.clear_account(session, email=email)
    if require_verified and not user.email_verified:
        raise Forbidden(UNVERIFIED_LOGIN)
    return user


# ---- credentials: API tokens and portal sessions -------------------------------------------------------------


def token_hash(raw: str) -> str:
    """What is stored of a secret token (API tokens, sessions, machine tokens, invite links): its sha256."""
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(session: Session, *, user: User, kind: CredentialKind = CredentialKind.api,
                policy: CredentialPolicy | None = None) -> str:
    """A new credential for the user; only its hash is stored. Portal sessions and API tokens both expire."""
    policy = policy or CredentialPolicy()
    now = utcnow()
    lifetime = policy.session_max if kind == CredentialKind.web else policy.token_max
    raw = ("obs_" if kind == CredentialKind.api else "") + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=token_hash(raw), kind=kind, created_at=now,
                         last_used_at=now, expires_at=now + lifetime))
    session.flush()
    return raw


def revoke_token(session: Session, *, raw: str) -> None:
    session.exec(delete(ApiToken).where(ApiToken.token_hash == token_hash(raw)))


def _expired(token: ApiToken, policy: CredentialPolicy, now: datetime) -> bool:
    if token.expires_at <= now:
        return True
    return token.kind == CredentialKind.web and token.last_used_at + policy.session_idle <= now


def credential_for(session: Session, raw: str, kind: CredentialKind,
                   policy: CredentialPolicy | None = None) -> ApiToken | None:
    """The live credential of that kind for a raw token, or None (unknown, revoked, expired or idle too long)."""
    token = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash(raw))).first()
    if token is None or token.kind != kind or _expired(token, policy or CredentialPolicy(), utcnow()):
        return None
    return token


def user_for_token(session: Session, raw: str, kind: CredentialKind = CredentialKind.api,
                   policy: CredentialPolicy | None = None) -> User | None:
    token = credential_for(session, raw, kind, policy)
    return session.get(User, token.user_id) if token else None


# ---- OpenID Connect ------------------------------------------------------------------------------------------


def _release(session: Session, holder: User, issuer: str) -> None:
    """An account that never confirmed its address gives it up to someone whose provider vouches for it: it
    keeps nothing that works (its address becomes one nobody has, its links and sessions end)."""
    address = holder.email
    holder.email = f"released-{holder.id}@unconfirmed.invalid"
    session.exec(delete(ApiToken).where(ApiToken.user_id == holder.id))
    session.add(holder)
    session.flush()
    record(session, None, "account.reclaimed", f"user:{holder.id}", address=address, by_issuer=issuer)


def user_for_oidc(session: Session, *, issuer: str, subject: str, email: str | None, email_verified: bool,
                  name: str | None) -> User:
    """The account of an OIDC identity, created as a researcher on first sign-in.

    An e-mail address is taken only when the provider says it verified it; otherwise the account gets an address
    made from the identity (never matched by anyone) and the claim is kept as unverified. ORCID's subject is the
    researcher's iD, so a subject shaped like one is kept as `orcid`.
    """
    if len(subject) > 255 or len(issuer) > 500 or clean_text(subject, 255) != subject:
        raise Invalid("the identity provider sent an identity this observatory cannot store")
    name = clean_text(name, 200) if name else None
    email = email if email and len(email) <= 320 and clean_text(email, 320) == email else None
    user = session.exec(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)).first()
    orcid = subject if ORCID_PATTERN.match(subject) else None
    claimed = normalise_email(email) if email else None
    if user is None:
        address = claimed if claimed and email_verified else f"{subject}@{_host(issuer)}".lower()
        holder = session.exec(select(User).where(User.email == address)).first()
        if holder is not None and not holder.email_verified and claimed and email_verified:
            _release(session, holder, issuer)  # a squat on an address the provider vouches for
        elif holder is not None:
            # Linking by email would let any provider that asserts an address take over a local account.
            raise Conflict(f"{address} already has an account here; sign in with its password")
        user = User(email=address, email_verified=bool(claimed and email_verified), name=name or subject,
                    roles=[Role.researcher.value], oidc_issuer=issuer, oidc_subject=subject, orcid=orcid)
    elif orcid:
        user.orcid = orcid
    user.unverified_email = claimed if claimed and not email_verified else None
    session.add(user)
    session.flush()
    return user


def _host(url: str) -> str:
    return re.sub(r"^https?://", "", url).split("/")[0].split(":")[0] or "oidc"
