"""Server-rendered pages: sign-in, sign-out and the recent events list."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from .auth import (
    SESSION_COOKIE,
    User,
    audit,
    check_csrf,
    client_ip,
    current_user,
    end_session,
    new_session,
    require,
    verify_login,
)
from .schema import events

router = APIRouter(include_in_schema=False)

ANY_ROLE = require("admin", "sv", "auditor")


def render(request: Request, name: str, context: dict[str, Any], status: int = 200
           ) -> HTMLResponse:
    templates = request.app.state.templates
    user = getattr(request.state, "user", None)
    return templates.TemplateResponse(request, name, {"user": user, **context},
                                      status_code=status)


def _safe_next(target: str | None) -> str:
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@router.get("/login")
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=512)] = "/",
) -> Response:
    engine = request.app.state.engine
    ip = client_ip(request)

    def check() -> User | None:
        with engine.begin() as conn:
            user = verify_login(conn, username, password)
            audit(conn, username, "login" if user else "login.failed", "", ip)
            return user

    user = await run_in_threadpool(check)
    if user is None:
        return render(request, "login.html",
                      {"next": _safe_next(next), "error": "Wrong user name or password."},
                      status=401)
    with engine.begin() as conn:
        token = new_session(conn, user)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    user = current_user(request)
    token = request.cookies.get(SESSION_COOKIE)
    if user is not None and token:
        check_csrf(request, user, csrf)
        with request.app.state.engine.begin() as conn:
            end_session(conn, token)
            audit(conn, user.name, "logout", "", client_ip(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(user: Annotated[User, Depends(ANY_ROLE)]) -> Response:
    return RedirectResponse("/events", status_code=303)


@router.get("/events")
def recent_events(request: Request, user: Annotated[User, Depends(ANY_ROLE)],
                  limit: int = 200) -> HTMLResponse:
    limit = max(1, min(limit, 1000))
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(sa.select(events).order_by(events.c.ts_us.desc(),
                                                       events.c.seq.desc()).limit(limit)).all()
    return render(request, "events.html", {"events": [r._mapping for r in rows]})
