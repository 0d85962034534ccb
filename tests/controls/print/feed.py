"""Sends hash-chained print events to a live console as one enrolled agent would."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx

from floorguard.events import GENESIS, new_id, record_hash, rfc3339
from tests.rigs.console import LiveConsole


class AgentFeed:
    def __init__(self, console: LiveConsole, seat: str = "T-09"):
        self.console = console
        self.agent_id = str(uuid.uuid4())
        self.seat = seat
        code = console.enroll_code()
        resp = httpx.post(console.url + "/api/v1/enroll", json={
            "code": code, "agent_id": self.agent_id, "host": "pc9", "seat": seat})
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["token"]
        self.seq = 0
        self.prev = GENESIS
        self.sent: list[dict[str, Any]] = []

    def record(self, kind: str, details: dict[str, Any], user: str | None = "alice",
               severity: str = "info") -> dict[str, Any]:
        self.seq += 1
        rec: dict[str, Any] = {
            "id": new_id(), "seq": self.seq, "ts": rfc3339(time.time()),
            "agent": self.agent_id, "host": "pc9", "seat": self.seat, "user": user,
            "control": "print", "kind": kind, "severity": severity, "policy": "",
            "details": details, "prev": self.prev}
        rec["hash"] = record_hash(rec)
        self.prev = rec["hash"]
        self.sent.append(rec)
        return rec

    def send(self, *records: dict[str, Any]) -> None:
        resp = httpx.post(self.console.url + "/api/v1/events",
                          json={"events": list(records)},
                          headers={"Authorization": f"Bearer {self.token}"})
        assert resp.status_code == 200, resp.text

    def emit(self, kind: str, details: dict[str, Any], **kw: Any) -> dict[str, Any]:
        rec = self.record(kind, details, **kw)
        self.send(rec)
        return rec


def csrf_of(client: httpx.Client, path: str = "/print") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, "no CSRF token on the page"
    return m.group(1)
