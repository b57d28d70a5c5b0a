"""Sign-up, sign-in and tokens for the JSON API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from service.audit.service import record
from service.auth import service
from service.auth.browser import sign_out_browser
from service.auth.schemas import Login, ProfileUpdate, RolesSet, TokenPublic, UserCreate, UserPublic
from service.config import Settings
from service.deps import AdminUser, CurrentUser, SessionDep, SettingsDep, client_address
from service.models import Role, User
from service.types import Email, IdPath, Name, Password, text

router = APIRouter(tags=["auth"])


def _token(session: SessionDep, settings: Settings, user: User) -> TokenPublic:
    policy = service.CredentialPolicy.from_settings(settings)
    token = service.issue_token(session, user=user, policy=policy)
    session.commit()
    return TokenPublic(token=token, expires_in_s=int(policy.token_max.total_seconds()),
                       user=UserPublic.model_validate(user, from_attributes=True))


class SignedUp(BaseModel):
    email: str
    detail: str


class Verification(BaseModel):
    token: text(100)
    password: Password


@router.post("/auth/signup", response_model=SignedUp, status_code=202)
def signup(data: UserCreate, session: SessionDep, settings: SettingsDep) -> SignedUp:
    """Create a researcher account with a local password. It is usable once confirmed: a link goes to the address,
    to be opened with the same password (`POST /api/auth/verify`)."""
    user = service.sign_up(session, email=data.email, name=data.name, password=data.password,
                           institution=data.institution, base_url=settings.base_url)
    session.commit()
    return SignedUp(email=user.email, detail=f"we sent a link to {user.email}: open it to confirm the address")


@router.post("/auth/verify", response_model=TokenPublic)
def verify(data: Verification, request: Request, session: SessionDep, settings: SettingsDep) -> TokenPublic:
    """Confirm an account's address with the token from the link sent there and the account's password; returns an
    API token."""
    user = service.verify_email(session, raw=data.token, password=data.password, address=client_address(request),
                                limits=service.throttle_limits(settings))
    return _token(session, settings, user)


@router.post("/auth/login", response_model=TokenPublic)
def login(data: Login, request: Request, session: SessionDep, settings: SettingsDep) -> TokenPublic:
    """Exchange an email and password for an API token (it expires). Repeated failures lock the account and the
    client address out for a while (429 with Retry-After)."""
    user = service.authenticate(session, email=data.email, password=data.password, address=client_address(request),
                                limits=service.throttle_limits(settings))
    return _token(session, settings, user)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, user: CurrentUser, session: SessionDep) -> None:
    """Revoke the bearer token used for this request (or end the portal session that made it)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        service.revoke_token(session, raw=header[7:].strip())
        session.commit()
    else:
        sign_out_browser(request, session)


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    """The signed-in account."""
    return UserPublic.model_validate(user, from_attributes=True)


@router.patch("/me", response_model=UserPublic)
def update_me(data: ProfileUpdate, user: CurrentUser, session: SessionDep) -> UserPublic:
    """Change your name or institution."""
    user = service.update_profile(session, user, name=data.name, institution=data.institution,
                                  expertise=data.expertise)
    session.commit()
    return UserPublic.model_validate(user, from_attributes=True)


class RoleTaken(BaseModel):
    role: Role


@router.post("/me/roles", response_model=UserPublic)
def take_role(data: RoleTaken, user: CurrentUser, session: SessionDep) -> UserPublic:
    """Add a role to your own account: `owner`, to lend machines to the pool. Other roles are given by admins."""
    user = service.take_role(session, user, data.role)
    session.commit()
    return UserPublic.model_validate(user, from_attributes=True)


class AccountCreate(BaseModel):
    email: Email
    name: Name
    roles: list[Role] = Field(default=[Role.researcher], min_length=1, max_length=len(Role))
    password: Password | None = None
    institution: text(200) = ""


@router.post("/users", response_model=UserPublic, status_code=201)
def create_account(data: AccountCreate, admin: AdminUser, session: SessionDep) -> UserPublic:
    """Admins create accounts holding any roles (reviewers, other admins)."""
    user = service.create_user(session, email=data.email, name=data.name, roles=data.roles, password=data.password,
                               institution=data.institution)
    record(session, admin, "role.set", f"user:{user.id}", before=[], after=list(user.roles))
    session.commit()
    return UserPublic.model_validate(user, from_attributes=True)


@router.put("/users/{user_id}/roles", response_model=UserPublic)
def set_roles(user_id: IdPath, data: RolesSet, admin: AdminUser, session: SessionDep) -> UserPublic:
    """Set the roles a person holds (admins): e.g. make a researcher a reviewer too. Recorded in the audit log."""
    user = service.set_roles(session, actor=admin, user_id=user_id, roles=data.roles)
    session.commit()
    return UserPublic.model_validate(user, from_attributes=True)
