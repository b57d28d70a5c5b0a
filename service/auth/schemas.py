from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from service.models import Role
from service.types import Email, Keywords, LoginEmail, Name, Password, text


class UserCreate(BaseModel):
    email: Email
    name: Name
    password: Password
    institution: text(200) = Field("", description="Used to keep reviewers off their colleagues' proposals.")


class ProfileUpdate(BaseModel):
    name: Name | None = None
    institution: text(200) | None = None
    expertise: Keywords | None = Field(None, description="A reviewer's keywords and subject areas.")


class RolesSet(BaseModel):
    roles: list[Role] = Field(min_length=1, max_length=len(Role))


class Login(BaseModel):
    email: LoginEmail
    password: Password


class UserPublic(BaseModel):
    id: int
    email: str
    name: str
    roles: list[Role]
    institution: str
    orcid: str | None
    created_at: datetime
    expertise: list[str] = []


class TokenPublic(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_in_s: int
    user: UserPublic
