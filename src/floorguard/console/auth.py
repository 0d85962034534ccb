"""Accounts, sessions and roles.

Passwords are hashed with argon2. A session is a random token in an HttpOnly, SameSite
cookie (Secure whenever the console is served over HTTPS); the store keeps only its
SHA-256, so a copy of the database lets nobody in. Every route declares the roles it
allows through ``require(...)``, checked on the server for every request.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from sqlalchemy.engine import Connection, Engine

from floorguard.console.store.db import now_us
from floorguard.console.store.schema import agents, audit_log, events, sessions, users

ROLES = ("admin", "sv", "auditor")
SESSION_COOKIE = "fg_session"
SESSION_IDLE_US = 8 * 3600 * 1_000_000  # a shift
SESSION_MAX_US = 12 * 3600 * 1_000_000
MIN_PASSWORD = 10

_hasher = PasswordHasher()


class AuthError(Exception):
    pass


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    lang: str | None = None
    csrf: str = ""
    # The floors this account may read and act on; None: every floor (admins, and auditors
    # with no membership). Attached by ``current_user``; see ``membership``.
    floors: frozenset[str] | None = None

    def sees(self, floor: str) -> bool:
        return self.floors is None or floor in self.floors

    def floor_clause(self, column: Any) -> Any:
        """A WHERE clause keeping rows whose floor ``column`` is one of the user's."""
        return sa.true() if self.floors is None else column.in_(sorted(self.floors))

    def agent_clause(self, column: Any) -> Any:
        """A WHERE clause keeping rows whose agent-id ``column`` is on the user's floors."""
        if self.floors is None:
            return sa.true()
        return column.in_(sa.select(agents.c.id).where(agents.c.floor.in_(sorted(self.floors))))

    def event_clause(self) -> Any:
        """A WHERE clause on ``events``: an agent's events by its floor; the console's own
        (``floor.*``, ``agent.silent``, ``agent.chain_broken``) by the floor or agent they
        are about."""
        if self.floors is None:
            return sa.true()
        from floorguard.console.console_events import CONSOLE_AGENT

        floors = sorted(self.floors)
        about = events.c.details
        return sa.or_(
            self.agent_clause(events.c.agent),
            sa.and_(events.c.agent == CONSOLE_AGENT,
                    sa.or_(about["floor"].as_string().in_(floors),
                           self.agent_clause(about["agent"].as_string()))))


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password must be at least {MIN_PASSWORD} characters long")


def add_user(conn: Connection, name: str, role: str, password: str) -> int:
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(
            ".", "").isalnum():
        raise AuthError("a user name is 1-64 letters, digits, '.', '-' or '_'")
    check_password_rules(password)
    exists = conn.execute(sa.select(users.c.id).where(users.c.name == name)).first()
    if exists:
        raise AuthError(f"user {name!r} already exists; use 'user passwd' to change it")
    res = conn.execute(users.insert().values(name=name, role=role,
                                             pw_hash=_hasher.hash(password),
                                             created_us=now_us()))
    return int(res.inserted_primary_key[0])  # type: ignore[index]


def set_password(conn: Connection, name: str, password: str) -> None:
    check_password_rules(password)
    res = conn.execute(users.update().where(users.c.name == name)
                       .values(pw_hash=_hasher.hash(password)))
    if res.rowcount == 0:
        raise AuthError(f"no user {name!r}")
    _end_sessions(conn, name)


def set_disabled(conn: Connection, name: str, disabled: bool = True) -> None:
    res = conn.execute(users.update().where(users.c.name == name).values(disabled=disabled))
    if res.rowcount == 0:
        raise AuthError(f"no user {name!r}")
    if disabled:
        _end_sessions(conn, name)


def _end_sessions(conn: Connection, name: str) -> None:
    uid = sa.select(users.c.id).where(users.c.name == name).scalar_subquery()
    conn.execute(sessions.delete().where(sessions.c.user_id == uid))


def list_users(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(users.c.name, users.c.role, users.c.disabled,
                                  users.c.created_us).order_by(users.c.name))
    return [dict(r._mapping) for r in rows]


def verify_login(conn: Connection, name: str, password: str) -> User | None:
    row = conn.execute(sa.select(users).where(users.c.name == name)).first()
    if row is None:
        # Spend the same time as a real check so names cannot be probed by timing.
        with contextlib.suppress(VerificationError, InvalidHashError):
            _hasher.verify(_dummy_hash(), password)
        return None
    try:
        _hasher.verify(row.pw_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if row.disabled:
        return None
    if _hasher.check_needs_rehash(row.pw_hash):
        conn.execute(users.update().where(users.c.id == row.id)
                     .values(pw_hash=_hasher.hash(password)))
    return User(id=row.id, name=row.name, role=row.role, lang=row.lang)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not a password of anyone's")


def new_session(conn: Connection, user: User) -> str:
    """A fresh session id (never reused from before login: no session fixation)."""
    token = secrets.token_urlsafe(32)
    now = now_us()
    conn.execute(sessions.insert().values(id_hash=sha256_hex(token), user_id=user.id,
                                          csrf=secrets.token_urlsafe(24), created_us=now,
                                          last_seen_us=now, expires_us=now + SESSION_MAX_US))
    return token


def end_session(conn: Connection, token: str) -> None:
    conn.execute(sessions.delete().where(sessions.c.id_hash == sha256_hex(token)))


def session_user(conn: Connection, token: str) -> User | None:
    now = now_us()
    row = conn.execute(
        sa.select(users.c.id, users.c.name, users.c.role, users.c.lang, users.c.disabled,
                  sessions.c.csrf, sessions.c.last_seen_us, sessions.c.expires_us)
        .join(users, users.c.id == sessions.c.user_id)
        .where(sessions.c.id_hash == sha256_hex(token))
    ).first()
    if row is None or row.disabled:
        return None
    if now > row.expires_us or now - row.last_seen_us > SESSION_IDLE_US:
        end_session(conn, token)
        return None
    if now - row.last_seen_us > 60_000_000:  # touch at most once a minute
        conn.execute(sessions.update().where(sessions.c.id_hash == sha256_hex(token))
                     .values(last_seen_us=now))
    return User(id=row.id, name=row.name, role=row.role, lang=row.lang, csrf=row.csrf)


def audit(conn: Connection, actor: str, action: str, target: str = "", ip: str = "",
          details: dict[str, Any] | None = None) -> None:
    """Append to the console's audit trail (no route edits or deletes it)."""
    conn.execute(audit_log.insert().values(ts_us=now_us(), actor=actor, action=action,
                                           target=target, ip=ip, details=details or {}))


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


class LoginRequired(Exception):
    """Raised for a page request without a valid session: the app redirects to /login."""


def current_user(request: Request) -> User | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    engine: Engine = request.app.state.engine
    with engine.begin() as conn:
        user = session_user(conn, token)
        return None if user is None else with_floors(conn, user)


def with_floors(conn: Connection, user: User) -> User:
    """The user with the floors they may see (see ``User.floors``)."""
    from dataclasses import replace

    from floorguard.console.membership import floors_of

    if user.role == "admin":
        return replace(user, floors=None)
    floors = floors_of(conn, user.id)
    if user.role == "auditor" and not floors:
        return replace(user, floors=None)
    return replace(user, floors=floors)


def _not_yours(floor: str) -> HTTPException:
    return HTTPException(403, f"floor {floor!r} is not one of your floors; an admin adds it "
                              "with 'floorguard console user floors NAME --set ...'")


def check_floor(user: User, floor: str) -> None:
    """The one floor check: 403 unless ``floor`` is one of the user's."""
    if not user.sees(floor):
        raise _not_yours(floor)


def check_agent(conn: Connection, user: User, agent_id: str) -> Any:
    """The agent's row, if it exists (404) and is on one of the user's floors (403)."""
    row = conn.execute(sa.select(agents).where(agents.c.id == agent_id)).first()
    if row is None:
        raise HTTPException(404, f"no agent {agent_id}")
    check_floor(user, row.floor)
    return row


def check_event(conn: Connection, user: User, agent_id: str, seq: int) -> Any:
    """The stored event, if it exists (404) and is about one of the user's floors (403)."""
    row = conn.execute(sa.select(events).where(events.c.agent == agent_id,
                                               events.c.seq == seq)).first()
    if row is None:
        raise HTTPException(404, "no such event")
    if user.floors is not None and conn.execute(
            sa.select(sa.literal(1)).select_from(events)
            .where(events.c.agent == agent_id, events.c.seq == seq,
                   user.event_clause())).first() is None:
        raise HTTPException(403, "this event is not about one of your floors")
    return row


def require(*roles: str) -> Any:
    """A FastAPI dependency: the signed-in user, if their role is one of ``roles``."""
    for r in roles:
        if r not in ROLES:
            raise ValueError(f"unknown role {r}")

    def dependency(request: Request) -> User:
        user = current_user(request)
        if user is None:
            if request.url.path.startswith("/api/"):
                raise HTTPException(401, "sign in first")
            raise LoginRequired()
        if user.role not in roles:
            raise HTTPException(403, f"the {user.role} role may not do this")
        request.state.user = user
        return user

    return dependency


def check_origin(request: Request) -> None:
    """A browser names the page a request comes from: refuse any other site's page."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # not a browser, or an old one: the CSRF token decides alone
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin != own:
        raise HTTPException(403, "this request comes from another site's page (Origin "
                                 f"{origin}); use the console's own pages")


def check_csrf(request: Request, user: User, token: str | None) -> None:
    """State-changing requests carry the session's CSRF token (form field or
    ``X-CSRF-Token`` header) and, from a browser, this console's own Origin."""
    check_origin(request)
    sent = token or request.headers.get("x-csrf-token") or ""
    # As bytes: compare_digest raises TypeError on a str that is not ASCII ("%FF").
    if not user.csrf or not hmac.compare_digest(sent.encode("utf-8", "surrogateescape"),
                                                user.csrf.encode()):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def require_write(*roles: str) -> Any:
    """Like ``require``, for state-changing requests: also checks Origin and the CSRF
    token (form field ``csrf`` or header ``X-CSRF-Token``) before the route runs."""
    allowed = require(*roles)

    async def dependency(request: Request) -> User:
        user: User = allowed(request)
        token = request.headers.get("x-csrf-token")
        if token is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # cached: the route reads the same form
            value = form.get("csrf")
            token = value if isinstance(value, str) else None
        check_csrf(request, user, token)
        return user

    return dependency
