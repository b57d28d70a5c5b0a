"""OpenID Connect sign-in for the portal (Authlib). ORCID is what researchers expect; any provider works."""

from __future__ import annotations

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from service.auth.browser import sign_in_browser
from service.auth.service import user_for_oidc
from service.config import Settings
from service.deps import SessionDep
from service.errors import Invalid, NotFound

router = APIRouter(prefix="/auth/oidc", tags=["auth"])


def make_oauth(settings: Settings) -> OAuth:
    oauth = OAuth()
    if settings.oidc_enabled:
        oauth.register(
            name="oidc",
            server_metadata_url=settings.oidc_server_metadata_url,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            client_kwargs={"scope": settings.oidc_scope},
        )
    return oauth


def _client(request: Request):
    client = request.app.state.oauth.create_client("oidc")
    if client is None:
        raise NotFound("OpenID Connect sign-in is not configured here")
    return client


@router.get("/login")
async def oidc_login(request: Request):
    """Send the browser to the provider."""
    return await _client(request).authorize_redirect(request, str(request.url_for("oidc_callback")))


@router.get("/callback", name="oidc_callback")
async def oidc_callback(request: Request, session: SessionDep):
    """The provider sends the browser back here; the account is found or created and signed in."""
    client = _client(request)
    try:
        token = await client.authorize_access_token(request)
    except OAuthError as exc:
        provider = request.app.state.settings.oidc_name
        raise Invalid(f"sign-in with {provider} failed: {exc.description or exc.error}") from None
    claims = dict(token.get("userinfo") or {})
    if not claims.get("email") or not claims.get("name"):
        # ORCID puts little in the ID token; its userinfo endpoint has the name.
        claims = {**dict(await client.userinfo(token=token)), **claims}
    metadata = await client.load_server_metadata()
    name = claims.get("name") or " ".join(filter(None, [claims.get("given_name"), claims.get("family_name")]))
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    user = user_for_oidc(session, issuer=metadata["issuer"], subject=str(claims["sub"]), email=email,
                         email_verified=claims.get("email_verified") is True, name=name or None)
    sign_in_browser(request, session, user)
    return RedirectResponse("/", status_code=303)
