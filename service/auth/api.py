"""Sign-up, sign-in and tokens for the JSON API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from service.auth import service
from service.auth.schemas import EMAIL_PATTERN, Login, TokenPublic, UserCreate, UserPublic
from service.deps import AdminUser, CurrentUser, SessionDep
from service.models import Role

router = APIRouter(tags=["auth"])


@router.post("/auth/signup", response_model=TokenPublic, status_code=201)
def signup(data: UserCreate, session: SessionDep) -> TokenPublic:
    """Create a researcher account with a local password and return an API token."""
    user = service.create_user(session, email=data.email, name=data.name, password=data.password)
    token = service.issue_token(session, user=user)
    session.commit()
    return TokenPublic(token=token, user=UserPublic.model_validate(user, from_attributes=True))


@router.post("/auth/login", response_model=TokenPublic)
def login(data: Login, session: SessionDep) -> TokenPublic:
    """Exchange an email and password for an API token."""
    user = service.authenticate(session, email=data.email, password=data.password)
    token = service.issue_token(session, user=user)
    session.commit()
    return TokenPublic(token=token, user=UserPublic.model_validate(user, from_attributes=True))


@router.post("/auth/logout", status_code=204)
def logout(request: Request, user: CurrentUser, session: SessionDep) -> None:
    """Revoke the bearer token used for this request."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        service.revoke_token(session, raw=header[7:].strip())
        session.commit()


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    """The signed-in account."""
    return UserPublic.model_validate(user, from_attributes=True)


class AccountCreate(BaseModel):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    name: str = Field(min_length=1, max_length=200)
    role: Role
    password: str | None = Field(None, min_length=8, max_length=200)


@router.post("/users", response_model=UserPublic, status_code=201)
def create_account(data: AccountCreate, admin: AdminUser, session: SessionDep) -> UserPublic:
    """Admins create accounts of any role (reviewers, other admins)."""
    user = service.create_user(session, email=data.email, name=data.name, role=data.role, password=data.password)
    session.commit()
    return UserPublic.model_validate(user, from_attributes=True)
