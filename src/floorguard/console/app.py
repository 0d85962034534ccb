"""The console's ASGI app: one explicit list of routers, one lifespan that owns the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from floorguard import __version__
from floorguard.console import throttle
from floorguard.console.api.limits import BodyLimits
from floorguard.console.auth import LoginRequired
from floorguard.console.live import Hub
from floorguard.console.store.db import open_store
from floorguard.console.web import i18n
from floorguard.events import Command

HERE = Path(__file__).parent



def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "web" / "templates"))
    i18n.install(templates.env)
    templates.env.globals["version"] = __version__
    return templates


def create_app(db_url: str | None = None, *, engine: Engine | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "engine", None) is None:
            app.state.engine = open_store(db_url)
        for start in app.state.on_start:
            start(app)
        try:
            yield
        finally:
            for stop in app.state.on_stop:
                stop(app)
            app.state.engine.dispose()

    app = FastAPI(title="floorguard console", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.hub = Hub()
    app.state.templates = make_templates()
    app.state.password_checks = throttle.PasswordChecks()

    # The page and API modules are imported here, not at the top: each one adds its
    # navigation link when imported, which a tool that imports only this module for
    # create_app's signature (the CLI's help) need not pay for.
    from floorguard.console import ratio
    from floorguard.console.api import events as api
    from floorguard.console.api import link as link_api
    from floorguard.console.ingest import chain, seats
    from floorguard.console.reports import rollup, schedule
    from floorguard.console.reports import web as reports_web
    from floorguard.console.web import (
        account,
        accounts,
        duty,
        fleet,
        floor,
        floor_settings,
        printing,
        violations,
    )
    from floorguard.console.web import audit as audit_view
    from floorguard.console.web import coverage as agents_view
    from floorguard.console.web import site as web

    app.include_router(api.router)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default_openapi()  # built once and cached by FastAPI
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            api.REQUEST_SCHEMAS)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(link_api.router)
    link_api.configure(app)
    for pages in (web, fleet, printing, reports_web, floor, violations, agents_view, duty,
                  audit_view, floor_settings, account, accounts):
        app.include_router(pages.router)
    # The ingest pipeline: what runs, in this order, inside the transaction that stores a
    # batch (the chain check first, since the acknowledgement and the others' view of the
    # batch depend on it; then the projections the pages read instead of scanning events).
    app.state.ingest_pipeline = (chain.check_batch, printing.ingest_hook,
                                 rollup.ingest_hook, seats.on_ingest)
    # What an agent's result for a command sets off, by command name.
    app.state.result_hooks = {Command.PRINT_DECIDE: (printing.on_decide_result,)}
    # Background work, started and stopped with the app, in this order.
    app.state.on_start = (link_api.start, schedule.start, ratio.start_scheduler)
    app.state.on_stop = (link_api.stop, schedule.stop, ratio.stop_scheduler)
    app.mount("/static", StaticFiles(directory=str(HERE / "web" / "static")), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """A page gets a page, translated; the API and scripts get JSON."""
        wants_html = "text/html" in request.headers.get("accept", "")
        if request.url.path.startswith("/api/") or not wants_html:
            return await http_exception_handler(request, exc)
        from floorguard.console.web.site import render

        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return render(request, "error.html", {"status": exc.status_code, "detail": detail},
                      status=exc.status_code)

    @app.exception_handler(UnicodeEncodeError)
    async def unencodable(request: Request, exc: UnicodeEncodeError) -> Response:
        """A lone surrogate (JSON's "\\ud800") parses into a str that neither the store
        nor a page can encode: the request was bad, not the console. The agent API names
        the field (request_limits.parse_json); this catches the routes FastAPI parses."""
        return JSONResponse({"detail": [{
            "loc": ["body"], "type": "surrogate",
            "msg": "a text value holds a lone surrogate (\\ud800-\\udfff); send valid "
                   "UTF-16 pairs"}]}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        """422 naming each field, without echoing the input back: an input of NaN (or a
        lone surrogate) cannot be written as JSON, and echoing turned it into a 500."""
        return JSONResponse({"detail": [
            {"loc": [x.encode("utf-8", "backslashreplace").decode() if isinstance(x, str)
                     else x for x in e.get("loc", ())],
             "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in exc.errors()]}, status_code=422)

    async def unstorable(request: Request, exc: Exception) -> Response:
        """The store refused a value (a NUL character in PostgreSQL text, a number out of
        a column's range) that no route check caught: the request was bad, not the
        console. The routes name their fields; this keeps any they miss from a 500."""
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        return JSONResponse({"detail": [{
            "loc": ["body"], "type": "unstorable",
            "msg": f"a value cannot be stored ({first}); remove NUL characters and keep "
                   "numbers in range"}]}, status_code=422)

    import sqlalchemy.exc

    app.add_exception_handler(sqlalchemy.exc.DataError, unstorable)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite-only installs
        pass
    else:
        # Ingest's COPY runs on the driver's cursor, below SQLAlchemy's wrapping.
        app.add_exception_handler(psycopg.DataError, unstorable)

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, _exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.url.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    # Outermost, so that an oversized or stalled body is refused before any other layer
    # (or a route's form parser, which spools to disk) reads it.
    app.add_middleware(BodyLimits)

    @app.get("/healthz", tags=["ops"])
    def healthz(request: Request) -> JSONResponse:
        """Liveness and store reachability (no authentication, no data)."""
        import sqlalchemy as sa

        try:
            with request.app.state.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception:
            return JSONResponse({"status": "store unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    return app
