from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from service.models import Role
from service.types import Email, LoginEmail, Name, Password


class UserCreate(BaseModel):
    email: Email
    name: Name
    password: Password


class Login(BaseModel):
    email: LoginEmail
    password: Password


class UserPublic(BaseModel):
    id: int
    email: str
    name: str
    roles: list[Role]
    orcid: str | None
    created_at: datetime


class TokenPublic(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_in_s: int
    user: UserPublic
