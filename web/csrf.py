"""Cross-site request forgery: one check, applied to every route of the app.

A request that may change something (any method but GET, HEAD and OPTIONS) and that is authorised by the session
cookie must come from the observatory's own pages:
- its Origin (or, lacking one, its Referer) is the observatory's own origin, and
- it carries the session's CSRF token: the `csrf_token` field of a portal form, or the `X-CSRF-Token` header
  of a script's request to the JSON API.
Portal forms need the token even when nobody is signed in, which also stops login CSRF. JSON API calls made with
a bearer token, and anonymous ones with no session behind them, carry no ambient authority and need neither.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from fastapi import Request

from service.deps import SAFE_METHODS
from service.errors import Forbidden

FIELD = "csrf_token"
HEADER = "x-csrf-token"


def csrf_token(request: Request) -> str:
    """The session's token, made on first use; pages put it in every form."""
    token = request.session.get(FIELD)
    if not token:
        token = request.session[FIELD] = secrets.token_urlsafe(32)
    return token


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def _allowed_origins(request: Request) -> set[str]:
    return {_origin(str(request.base_url)), _origin(request.app.state.settings.base_url)}


async def verify_csrf(request: Request) -> None:
    """Refuse a state-changing request that another site could have made the browser send."""
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    is_api = request.url.path.startswith("/api/")
    if is_api and not request.session.get("sid"):
        return  # anonymous: the session cookie grants nothing here
    # Browsers name the origin of every cross-site POST; where none is named, the token alone decides.
    claimed = (request.headers.get("origin") or _origin(request.headers.get("referer", ""))).lower()
    if claimed and claimed not in _allowed_origins(request):
        raise Forbidden("cross-site request refused: it did not come from the observatory's own pages")
    sent = request.headers.get(HEADER)
    if sent is None and not is_api:
        sent = str((await request.form()).get(FIELD, ""))
    expected = request.session.get(FIELD)
    if not sent or not expected or not secrets.compare_digest(sent, expected):
        raise Forbidden("the form has expired or did not come from the observatory; reload the page and retry")
