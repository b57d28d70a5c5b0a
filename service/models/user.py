"""People and how they sign in."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.columns import enum_column
from service.timeutil import utcnow


class Role(StrEnum):
    researcher = "researcher"
    reviewer = "reviewer"
    admin = "admin"


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc_identity"),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(index=True, unique=True, max_length=320)
    name: str = Field(max_length=200)
    role: Role = Field(default=Role.researcher, sa_type=enum_column(Role, 20))
    password_hash: str | None = Field(default=None, max_length=200)
    oidc_issuer: str | None = Field(default=None, max_length=500)
    oidc_subject: str | None = Field(default=None, max_length=255)
    orcid: str | None = Field(default=None, max_length=19)
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A bearer token for the JSON API; only its sha256 is kept."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    token_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
