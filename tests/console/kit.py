"""Test kit for the console: a running console over a real store, and enrolled seats that
post hash-chained events through the real agent API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from floorguard.console.auth import add_user
from floorguard.console.cli import create_enrollment_code
from floorguard.console.membership import floors_of, set_floors
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import agents, users
from floorguard.events import GENESIS, new_id, record_hash, rfc3339
from tests.rigs.console import LiveConsole
from tests.rigs.processes import PASSWORD


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Seat:
    """One enrolled agent: posts events through ``POST /api/v1/events`` with its token."""

    url: str
    floor: str
    seat: str
    agent_id: str = ""
    token: str = ""
    seq: int = 0
    prev: str = GENESIS
    host: str = ""
    posted: list[dict[str, Any]] = field(default_factory=list)

    def enroll(self, engine: Engine) -> Seat:
        code = create_enrollment_code(engine, "test", self.floor, 3600)
        self.agent_id = str(uuid.uuid4())
        self.host = self.host or f"pc-{self.seat.lower()}"
        resp = httpx.post(self.url + "/api/v1/enroll", json={
            "code": code, "agent_id": self.agent_id, "host": self.host, "seat": self.seat},
            timeout=10)
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["token"]
        return self

    def record(self, kind: str, severity: str = "info", *, user: str | None = None,
               details: dict[str, Any] | None = None, ts: float | None = None,
               policy: str = "a" * 64) -> dict[str, Any]:
        import time

        t = time.time() if ts is None else ts
        self.seq += 1
        rec: dict[str, Any] = {
            "id": new_id(t), "seq": self.seq, "ts": rfc3339(t), "agent": self.agent_id,
            "host": self.host, "seat": self.seat, "user": user, "control": kind.split(".")[0],
            "kind": kind, "severity": severity, "policy": policy, "details": details or {},
            "prev": self.prev}
        rec["hash"] = record_hash(rec)
        self.prev = rec["hash"]
        return rec

    def post(self, *records: dict[str, Any]) -> dict[str, Any]:
        resp = httpx.post(self.url + "/api/v1/events", json={"events": list(records)},
                          headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        self.posted.extend(records)
        return dict(resp.json())

    def event(self, kind: str, severity: str = "info", **kw: Any) -> dict[str, Any]:
        rec = self.record(kind, severity, **kw)
        self.post(rec)
        return rec


@dataclass
class Site:
    """A console process over a real store, and an engine on the same store for set-up."""

    backend: str
    db_url: str
    engine: Engine
    live: LiveConsole

    @property
    def url(self) -> str:
        return self.live.url

    def add_user(self, name: str, role: str, password: str = PASSWORD,
                 floors: tuple[str, ...] = ()) -> str:
        with self.engine.begin() as conn:
            add_user(conn, name, role, password)
            if floors:
                set_floors(conn, name, list(floors), now_us())
        return name

    def join_floor(self, name: str, floor: str) -> None:
        """Add ``floor`` to the account's floors (SVs see and act on their floors only)."""
        with self.engine.begin() as conn:
            uid = conn.execute(sa.select(users.c.id).where(users.c.name == name)).scalar()
            assert uid is not None, f"no user {name!r}: add it, or pass staff= to seat()"
            have = floors_of(conn, int(uid))
            if floor not in have:
                set_floors(conn, name, sorted(have | {floor}), now_us())

    def login(self, name: str, password: str = PASSWORD) -> httpx.Client:
        client = self.live.login(name, password)
        client.headers["Origin"] = self.url
        return client

    def csrf(self, client: httpx.Client) -> str:
        """The session's CSRF token, read from a page as a browser would."""
        import re

        page = client.get("/floor")
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert m, page.text[:500]
        return m.group(1)

    def seat(self, floor: str, seat: str, *, staff: tuple[str, ...] = ("sv1", "sv2")) -> Seat:
        """An enrolled seat on ``floor``, which the site's SVs (``staff``) work on; pass
        ``staff=()`` for a floor none of them is a member of."""
        for name in staff:
            self.join_floor(name, floor)
        return Seat(self.url, floor, seat).enroll(self.engine)

    def heartbeat(self, seat: Seat, status: dict[str, Any], at_us: int | None = None) -> None:
        """What the link stores from an agent's heartbeat: its status and last-heard time."""
        with self.engine.begin() as conn:
            conn.execute(agents.update().where(agents.c.id == seat.agent_id)
                         .values(status=status, last_seen_us=at_us or now_us()))

    def set_last_seen(self, seat: Seat, at_us: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(agents.update().where(agents.c.id == seat.agent_id)
                         .values(last_seen_us=at_us))

    def scalar(self, query: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def rows(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())


def count(site: Site, table: sa.Table, *where: Any) -> int:
    return int(site.scalar(sa.select(sa.func.count()).select_from(table).where(*where)))
