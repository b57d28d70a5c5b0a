"""People and how they sign in."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class Role(StrEnum):
    researcher = "researcher"
    reviewer = "reviewer"
    owner = "owner"  # lends machines to the pool; anyone may add it to their own account
    admin = "admin"


SELF_SERVICE_ROLES = frozenset({Role.owner})


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc_identity"),)

    id: int | None = Field(default=None, primary_key=True)
    # The address people find this account by. From an identity provider it is taken only when the provider
    # says it verified it; an unverified claim is kept apart and never matched on.
    email: str = Field(index=True, unique=True, max_length=320)
    email_verified: bool = False
    unverified_email: str | None = Field(default=None, max_length=320)
    name: str = Field(max_length=200)
    # A set: a researcher is often a reviewer too, and may own a GPU. Kept sorted, read through `has`.
    roles: list[str] = Field(default_factory=lambda: [Role.researcher.value], sa_column=Column(JSON, nullable=False))
    password_hash: str | None = Field(default=None, max_length=200)
    oidc_issuer: str | None = Field(default=None, max_length=500)
    oidc_subject: str | None = Field(default=None, max_length=255)
    orcid: str | None = Field(default=None, max_length=19)
    # Reviewers from a team member's institution are kept off that proposal.
    institution: str = Field(default="", max_length=200)
    # A reviewer's keywords and subject areas: matching prefers reviewers whose expertise a proposal names.
    expertise: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    created_at: datetime = Field(default_factory=utcnow)

    def has(self, role: Role | str) -> bool:
        """Whether this person holds `role`."""
        return str(role) in self.roles


class CredentialKind(StrEnum):
    api = "api"  # a bearer token for the JSON API
    web = "web"  # a portal session, named by the signed session cookie
    verify = "verify"  # a link that confirms an account's e-mail address (used once, with the account's password)


class ApiToken(SQLModel, table=True):
    """A credential: a bearer token or a portal session. Only its sha256 is kept; deleting it signs it out."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    token_hash: str = Field(unique=True, max_length=64)
    kind: CredentialKind = Field(default=CredentialKind.api, sa_type=enum_column(CredentialKind, 10))
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class LoginFailure(SQLModel, table=True):
    """Failed sign-ins counted per account and per client address, to slow down password guessing."""

    __tablename__ = "login_failures"

    key: str = Field(primary_key=True, max_length=400)  # "account:<email>" or "address:<ip>"
    failures: int = 0
    window_started_at: datetime = Field(default_factory=utcnow)
    locked_until: datetime | None = None
