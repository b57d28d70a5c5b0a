"""Template rendering with the signed-in user and flash messages in every page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from service.deps import get_optional_user
from service.errors import DomainError
from service.models import User
from web.csrf import csrf_token

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def gpu_time(hours: float | None) -> str:
    """GPU time in the unit that reads best: seconds, minutes or hours."""
    if hours is None:
        return "unknown"
    seconds = hours * 3600
    if seconds < 90:
        whole = max(round(seconds), 1)
        return f"{whole} GPU-second{'s' if whole != 1 else ''}"
    if seconds < 5400:
        return f"{seconds / 60:.0f} GPU-minutes"
    return f"{hours:.2f} GPU-hours"


templates.env.filters["gpu_time"] = gpu_time


def current_user(request: Request) -> User | None:
    """The user a route's dependency already found, else the portal session's (pages without one)."""
    if hasattr(request.state, "user"):
        return request.state.user
    if not request.session.get("sid"):
        return None
    with Session(request.app.state.engine) as session:
        try:
            return get_optional_user(request, session)
        except DomainError:
            return None


async def form_fields(request: Request) -> dict[str, str]:
    """A posted form's fields as text, without its CSRF token."""
    return {k: str(v) for k, v in (await request.form()).items() if k != "csrf_token"}


def flash(request: Request, message: str, kind: str = "info") -> None:
    request.session.setdefault("flash", []).append({"message": message, "kind": kind})


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def act(request: Request, session: Session, url: str, success: str, action: Callable[[], object]) -> RedirectResponse:
    """Run one domain action for a form: commit and flash `success`, or roll back and flash the refusal."""
    try:
        action()
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(url)
    session.commit()
    flash(request, success)
    return redirect(url)


def render(request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200):
    messages = request.session.pop("flash", []) if "session" in request.scope else []
    base = {"user": current_user(request) if "session" in request.scope else None, "messages": messages,
            "settings": request.app.state.settings, "csrf_token": csrf_token(request)}
    return templates.TemplateResponse(request, template, {**base, **(context or {})}, status_code=status_code)
