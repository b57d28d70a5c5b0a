"""Annotated dependencies: the database session, who is asking, and role checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.auth.service import CredentialPolicy, credential_for, user_for_token
from service.config import Settings
from service.db import writer
from service.errors import Forbidden, Unauthenticated
from service.models import ApiToken, CredentialKind, Role, User
from service.timeutil import utcnow

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session on the app's engine; routes commit explicitly, anything left uncommitted rolls back.

    A request that may write (POST, PATCH, …) gets a writer session, so its checks and writes are serialised.
    The session is made and closed on the event loop, not in a worker thread: a request that has finished its work
    never waits for a free thread while it still holds a database connection.
    """
    engine = request.app.state.engine
    with Session(engine if request.method in SAFE_METHODS else writer(engine), expire_on_commit=False) as session:
        yield session


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def client_address(request: Request) -> str | None:
    """The client's address as the server saw it (behind a proxy, run uvicorn with --proxy-headers)."""
    return request.client.host if request.client else None


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


TOUCH_EVERY = timedelta(minutes=1)


def _touch(engine: Engine, credential_id: int) -> None:
    """Note that a portal session is in use (its idle limit restarts), in a short transaction of its own."""
    with Session(writer(engine)) as session:
        session.exec(update(ApiToken).where(ApiToken.id == credential_id).values(last_used_at=utcnow()))
        session.commit()


def get_optional_user(request: Request, session: SessionDep) -> User | None:
    """A bearer token (the JSON API) or the portal session the signed cookie names; None when anonymous.

    Portal sessions live in the database, so signing out (or an expiry) ends them even for a copied cookie.
    """
    policy = CredentialPolicy.from_settings(request.app.state.settings)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = user_for_token(session, header[7:].strip(), CredentialKind.api, policy)
        if user is None:
            raise Unauthenticated("the bearer token is not valid or has expired; sign in again")
    else:
        raw = request.session.get("sid") if "session" in request.scope else None
        credential = credential_for(session, raw, CredentialKind.web, policy) if isinstance(raw, str) else None
        user = session.get(User, credential.user_id) if credential else None
        if credential and utcnow() - credential.last_used_at > TOUCH_EVERY:
            _touch(request.app.state.engine, credential.id)
    # Hand the connection back before the route runs in another thread; the user stays readable, detached.
    session.close()
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
        if not any(user.has(role) for role in roles):
            raise Forbidden(f"this needs the role {allowed}; you hold {', '.join(user.roles) or 'no role'}")
        return user

    return check


AdminUser = Annotated[User, Depends(require_role(Role.admin))]
ResearcherUser = Annotated[User, Depends(require_role(Role.researcher))]
