"""Server-rendered pages: rendering (language, navigation), sign-in, sign-out and the
recent events list.

Other page areas add their navigation entry with ``add_nav(...)`` from their own module
(the header shows each entry only to the roles that may open it) and render through
``render(...)``, which gives every template the request's language, ``_``, the user and
the CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from floorguard.console import throttle
from floorguard.console.api.limits import Limit
from floorguard.console.auth import (
    SESSION_COOKIE,
    User,
    audit,
    check_csrf,
    check_origin,
    client_ip,
    current_user,
    end_session,
    new_session,
    require,
    verify_login,
)
from floorguard.console.store.db import now_us
from floorguard.console.web.i18n import (
    DEFAULT_TIMEZONE,
    N_,
    choose_lang,
    template_context,
    translate,
)

router = APIRouter(include_in_schema=False)

ANY_ROLE = require("admin", "sv", "auditor")


@dataclass(frozen=True)
class NavLink:
    href: str
    label: str  # marked with N_(), translated when shown
    roles: tuple[str, ...]
    order: int = 50


NAV: list[NavLink] = []


def add_nav(href: str, label: str, roles: tuple[str, ...], order: int = 50) -> None:
    """Add a header link (idempotent), shown to ``roles`` only."""
    if not any(n.href == href for n in NAV):
        NAV.append(NavLink(href, label, roles, order))
        NAV.sort(key=lambda n: (n.order, n.href))


add_nav("/events", N_("Events"), ("admin", "sv", "auditor"), order=40)
# Pages of other areas whose modules do not register their own link.
add_nav("/agents", N_("Agents"), ("admin", "sv", "auditor"), order=30)
add_nav("/print", N_("Print approvals"), ("admin", "sv", "auditor"), order=25)
add_nav("/reports", N_("Reports"), ("admin", "auditor"), order=60)


def request_lang(request: Request) -> str:
    user = getattr(request.state, "user", None)
    return choose_lang(user.lang if user else None, request.headers.get("accept-language"))


def render(request: Request, name: str, context: dict[str, Any], status: int = 200
           ) -> HTMLResponse:
    templates = request.app.state.templates
    user = getattr(request.state, "user", None)
    lang = request_lang(request)
    nav = [n for n in NAV if user and user.role in n.roles]
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    base = {"user": user, "nav": nav, "path": request.url.path, "here": here,
            "tz": DEFAULT_TIMEZONE,
            **template_context(lang)}
    return templates.TemplateResponse(request, name, {**base, **context},
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


WRONG_LOGIN = N_("Wrong user name or password.")
THROTTLED = N_("Too many failed sign-ins. Try again in %(minutes)s minutes.")
BUSY_LOGIN = N_("Too many sign-ins at once. Try again in a moment.")
# Every password-check slot was taken: no password was checked, nothing was counted.
BUSY = throttle.Throttled(retry_after_s=1, by="busy")


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=512)] = "/",
) -> Response:
    check_origin(request)  # no signing a victim in to someone else's account
    engine = request.app.state.engine
    ip = client_ip(request)
    old_token = request.cookies.get(SESSION_COOKIE)

    checks: throttle.PasswordChecks = request.app.state.password_checks

    def check() -> tuple[User | None, throttle.Throttled | None]:
        with checks.slot() as free:
            if not free:
                return None, BUSY
            # Reserved and committed before counting: see throttle's docstring.
            now = now_us()
            attempt = throttle.reserve(engine, username, ip, now)
            with engine.begin() as conn:
                blocked = throttle.check(conn, attempt, ip, now)
                if blocked is not None:
                    throttle.release(conn, attempt)
                    audit(conn, username, "login.throttled", "", ip,
                          {"by": blocked.by, "retry_after_s": blocked.retry_after_s})
                    return None, blocked
            with engine.begin() as conn:
                user = verify_login(conn, username, password)
                if user is not None:
                    throttle.release(conn, attempt)
                    throttle.clear(conn, username, ip)
                audit(conn, username, "login" if user else "login.failed", "", ip)
                if user is not None and old_token:
                    # Whatever session this browser carried before is over: a planted
                    # cookie never becomes a signed-in session (no session fixation).
                    end_session(conn, old_token)
                return user, None

    user, blocked = await run_in_threadpool(check)
    if blocked is BUSY:
        lang = choose_lang(None, request.headers.get("accept-language"))
        response = render(request, "login.html", {"next": _safe_next(next),
                                                  "error": translate(lang, BUSY_LOGIN)},
                          status=503)
        response.headers["Retry-After"] = "1"
        return response
    if blocked is not None:
        lang = choose_lang(None, request.headers.get("accept-language"))
        minutes = max(1, (blocked.retry_after_s + 59) // 60)
        message = translate(lang, THROTTLED) % {"minutes": minutes}
        response = render(request, "login.html", {"next": _safe_next(next),
                                                  "error": message}, status=429)
        response.headers["Retry-After"] = str(blocked.retry_after_s)
        return response
    if user is None:
        lang = choose_lang(None, request.headers.get("accept-language"))
        return render(request, "login.html",
                      {"next": _safe_next(next), "error": translate(lang, WRONG_LOGIN)},
                      status=401)
    with engine.begin() as conn:
        token = new_session(conn, user)
    redirect = RedirectResponse(_safe_next(next), status_code=303)
    redirect.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return redirect


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
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


@router.get("/")
def home(user: Annotated[User, Depends(ANY_ROLE)]) -> Response:
    return RedirectResponse("/floor", status_code=303)


@router.get("/events")
def recent_events(request: Request, user: Annotated[User, Depends(ANY_ROLE)],
                  limit: Limit = 200) -> HTMLResponse:
    from floorguard.console.violations import Filters, list_events

    limit = max(1, min(limit, 1000))
    with request.app.state.engine.connect() as conn:
        rows = list_events(conn, Filters(severity=""), DEFAULT_TIMEZONE, None, limit,
                           visible=user.event_clause())
    return render(request, "events.html", {"events": [r._mapping for r in rows]})
