"""Annotated dependencies: the database session, who is asking, and role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from service.auth.service import user_for_token
from service.config import Settings
from service.errors import Forbidden, Unauthenticated
from service.models import Role, User


def get_session(request: Request) -> Iterator[Session]:
    """A session on the app's engine; routes commit explicitly, anything left uncommitted rolls back."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_optional_user(request: Request, session: SessionDep) -> User | None:
    """A bearer token (the JSON API) or the signed session cookie (the portal); None when anonymous."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = user_for_token(session, header[7:].strip())
        if user is None:
            raise Unauthenticated("the bearer token is not valid")
    else:
        user_id = request.session.get("user_id") if "session" in request.scope else None
        user = session.get(User, user_id) if user_id else None
    request.state.user = user  # the portal's templates show who is signed in without asking again
    return user


OptionalUser = Annotated[User | None, Depends(get_optional_user)]


def get_current_user(user: OptionalUser) -> User:
    if user is None:
        raise Unauthenticated("sign in first")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: Role) -> Callable[[User], User]:
    allowed = ", ".join(roles)

    def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden(f"this needs the role {allowed}; you are signed in as {user.role}")
        return user

    return check


AdminUser = Annotated[User, Depends(require_role(Role.admin))]
ResearcherUser = Annotated[User, Depends(require_role(Role.researcher))]
