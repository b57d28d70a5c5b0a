from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from service.models import Role

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class UserCreate(BaseModel):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=8, max_length=200)


class Login(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=200)


class UserPublic(BaseModel):
    id: int
    email: str
    name: str
    role: Role
    orcid: str | None
    created_at: datetime


class TokenPublic(BaseModel):
    token: str
    token_type: str = "bearer"
    user: UserPublic
