"""create_app(): the JSON API, OIDC sign-in and the portal's pages in one ASGI app. The only loop it starts sends the
e-mail outbox (when an SMTP server is set); the scheduler runs elsewhere."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from jobs.version import installed_version
from service.api import job_api
from service.api import router as api_router
from service.auth.oidc import make_oauth
from service.auth.oidc import router as oidc_router
from service.config import Settings, get_settings
from service.db import engine_for
from service.errors import Busy, Conflict, DomainError, Unauthenticated
from service.mail.sender import run_mail_loop
from service.wording import plain_message
from web.analysis_pages import router as analysis_pages_router
from web.api_docs import API_DOCS_ASSETS, swagger_ui_path
from web.api_docs import router as api_docs_router
from web.archive_pages import router as archive_pages_router
from web.award_pages import router as award_pages_router
from web.csrf import verify_csrf
from web.dataset_pages import router as dataset_pages_router
from web.expertise_pages import router as expertise_pages_router
from web.middleware import LoadShedding, SecurityHeaders
from web.model_pages import router as model_pages_router
from web.pages import router as pages_router
from web.people_pages import router as people_pages_router
from web.pool_pages import router as pool_pages_router
from web.render import flash, render
from web.review_pages import router as review_pages_router
from web.team_pages import router as team_pages_router

STATIC = Path(__file__).parent / "static"


class ObservatoryApp(FastAPI):
    def build_middleware_stack(self):  # type: ignore[no-untyped-def]
        """Security headers wrap everything, so that even a refusal made before any route (a body too large, an
        unhandled error) carries them."""
        return SecurityHeaders(super().build_middleware_stack())


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Routes run in this many threads: no more than the database pool can serve at once.
    settings = app.state.settings
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
    stop = threading.Event()
    if settings.smtp_host and settings.mail_loop:  # the outbox is sent from the portal, which holds the SMTP secret
        threading.Thread(target=run_mail_loop, args=(app.state.engine, settings, stop), name="mail-loop",
                         daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Bodies past the limits are refused (413) as they arrive, before anything holds them: the portal's forms are
    # small, the JSON API's bodies a little larger.
    app = ObservatoryApp(
        title="Commons Observatory", version=installed_version(), dependencies=[Depends(verify_csrf)],
        lifespan=_lifespan, docs_url=None, redoc_url=None,
        max_body_size=settings.max_body_bytes,
        description="Peer-reviewed GPU time on a volunteered pool, for a diffusion model trained on openly licensed "
                    "images.")
    app.state.settings = settings
    app.state.engine = engine or engine_for(settings)
    app.state.oauth = make_oauth(settings)
    # The cookie carries the session id (see service.auth.browser), the CSRF token and flash messages; it is
    # Secure unless the observatory is served over plain HTTP on this machine alone.
    app.add_middleware(SessionMiddleware, secret_key=settings.resolved_secret_key(), same_site="lax",
                       session_cookie="observatory_session", max_age=settings.session_max_hours * 3600,
                       https_only=settings.cookie_secure)
    app.add_middleware(LoadShedding, limit=settings.max_requests_in_flight)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        if request.url.path.startswith("/api/"):
            headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
            if exc.retry_after_s is not None:
                headers = {"Retry-After": str(exc.retry_after_s)}
            return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)
        if isinstance(exc, Unauthenticated):
            flash(request, "That page is for signed-in members: sign in and it opens.")
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        if isinstance(exc, Busy):
            request.state.user = None  # the page is drawn without asking the busy database who is signed in
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
        response = render(request, "error.html", {"message": exc.message}, status_code=exc.status_code)
        response.headers.update(headers or {})
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """An unknown address or method: JSON on the API, a page of the portal's elsewhere."""
        if request.url.path.startswith("/api/") or request.url.path.startswith("/static/"):
            return await http_exception_handler(request, exc)
        message = {404: "There is no page at this address.",
                   405: "This address does not take that kind of request."}.get(exc.status_code, str(exc.detail))
        response = render(request, "error.html", {"message": message, "title": "Not found"
                                                  if exc.status_code == 404 else "That did not work"},
                          status_code=exc.status_code)
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        where = ['.'.join(str(p) for p in e['loc'] if p != 'body') for e in exc.errors()]
        problems = [f"{at}: {plain_message(e)}" if at else plain_message(e) for at, e in zip(where, exc.errors(),
                                                                                          strict=True)]
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "; ".join(problems), "errors": problems}, status_code=422)
        return render(request, "error.html", {"message": "; ".join(problems)}, status_code=422)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError):
        """What the database refused despite the checks before it: a lost race, a busy moment, a bad value."""
        if isinstance(exc, IntegrityError):
            error: DomainError = Conflict("that conflicts with a change made at the same moment; reload and retry")
        elif isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower():
            error = Busy("the database is busy; try again in a few seconds")
        else:
            raise exc
        return await domain_error(request, error)

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(request: Request, exc: PoolTimeout):
        return await domain_error(request, Busy("the observatory is busy; try again in a few seconds"))

    app.include_router(api_router)
    app.include_router(job_api, max_body_size=settings.max_output_bytes)
    app.include_router(oidc_router)
    app.include_router(pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(pool_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(review_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(team_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(people_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(model_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(dataset_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(analysis_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(archive_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(award_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(expertise_pages_router, max_body_size=settings.max_form_bytes)
    app.include_router(api_docs_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/favicon.ico", lambda: FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml"),
                      include_in_schema=False)
    app.mount(API_DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="api-docs-assets")
    return app
