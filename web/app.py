"""create_app(): the JSON API, OIDC sign-in and the portal's pages in one ASGI app. No loops start here."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from starlette.middleware.sessions import SessionMiddleware

from service.api import router as api_router
from service.auth.oidc import make_oauth
from service.auth.oidc import router as oidc_router
from service.config import Settings, get_settings
from service.db import get_engine
from service.errors import DomainError, Unauthenticated
from web.pages import router as pages_router
from web.render import render

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="Commons Observatory", version="0.1.0",
                  description="Peer-reviewed GPU time on a volunteered pool, for a Commons-only diffusion model.")
    app.state.settings = settings
    app.state.engine = engine or get_engine()
    app.state.oauth = make_oauth(settings)
    app.add_middleware(SessionMiddleware, secret_key=settings.resolved_secret_key(), same_site="lax",
                       session_cookie="observatory_session", max_age=14 * 24 * 3600,
                       https_only=settings.base_url.startswith("https://"))

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        if request.url.path.startswith("/api/"):
            headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
            return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)
        if isinstance(exc, Unauthenticated):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        return render(request, "error.html", {"message": exc.message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "; ".join(problems), "errors": problems}, status_code=422)
        return render(request, "error.html", {"message": "; ".join(problems)}, status_code=422)

    app.include_router(api_router)
    app.include_router(oidc_router)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
