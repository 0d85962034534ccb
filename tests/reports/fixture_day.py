"""A fixture day with known answers, ingested through the console's real API.

Floor "3F north" (Asia/Tokyo), 2026-11-26:
- A1 at seat T-01: alice in the morning, bob in the afternoon; a policy change at 11:00.
- A2 at seat T-02: bob in the morning (bob hot-desks), carol in the afternoon; heartbeats
  at 20:00 and 21:00; one event at 23:50 (inside the day) and one at 00:10 the next day.
- A3 at seat T-03: dave; record 4 altered after it was hashed (the console records
  agent.chain_broken when it ingests it, i.e. on the day the test runs), record 5 never
  arrives; last heartbeat 10:59:30, found silent at 11:05, recovered at 12:30.
- A4 at seat T-04: enrolled, never heard.
Floor "2F south": B1 at seat S-01 with one violation (must not leak into 3F north).
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from floorguard.console.auth import sha256_hex
from floorguard.console.console_events import record_console_event
from floorguard.console.ingest.pipeline import ts_to_us
from floorguard.console.presence import check_silent, heartbeat
from floorguard.console.store.schema import agents
from floorguard.events import GENESIS, record_hash, rfc3339

DAY = "2026-11-26"
TZ = ZoneInfo("Asia/Tokyo")
FLOOR = "3F north"
P0, P1, P2 = "0" * 63 + "a", "1" * 63 + "b", "2" * 63 + "c"
A1, A2, A3, A4, B1 = (str(uuid.UUID(int=i)) for i in (1, 2, 3, 4, 5))
SEATS = {A1: "T-01", A2: "T-02", A3: "T-03", A4: "T-04", B1: "S-01"}
TOKENS = {a: f"token-{a}-0123456789" for a in SEATS}


def local(hhmm: str, day: str = DAY) -> str:
    """An RFC 3339 UTC time for a local Tokyo time of the fixture day."""
    dt = datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=TZ)
    return rfc3339(dt.timestamp())


def us(hhmm: str, day: str = DAY) -> int:
    return ts_to_us(local(hhmm, day))


# (time, user, control, kind, severity, details) per agent, in seq order.
PLAN: dict[str, list[tuple[str, str | None, str, str, str, dict[str, Any]]]] = {
    A1: [
        ("09:00:00", "alice", "agent", "agent.started", "info", {}),
        ("09:00:01", "alice", "agent", "agent.policy_loaded", "info",
         {"hash": P1, "previous": P0, "source": "/etc/floorguard/policy.toml"}),
        ("09:10:00", "alice", "usb", "usb.blocked", "violation", {"recognition": "storage"}),
        ("09:20:00", "alice", "usb", "usb.blocked", "violation", {"recognition": "phone"}),
        ("09:30:00", "alice", "usb", "usb.allowed", "info",
         {"rule": "usb.device[0b0e:24c8]", "device": "0b0e:24c8"}),
        ("09:31:00", "alice", "usb", "usb.allowed", "info", {"rule": "usb.allow[03:*:*]"}),
        ("10:00:00", "alice", "idle", "idle.locked", "info", {}),
        ("10:30:00", "alice", "print", "print.held", "info",
         {"job": 11, "pages": 3, "title": "form"}),
        ("10:35:00", "alice", "print", "print.approved", "info",
         {"job": 11, "pages": 3, "by": "sv1"}),
        ("11:00:00", "alice", "agent", "agent.policy_loaded", "info",
         {"hash": P2, "previous": P1, "source": "console"}),
        ("14:00:00", "bob", "usb", "usb.blocked", "violation", {"recognition": "network"}),
        ("14:30:00", "bob", "print", "print.held", "info", {"job": 12, "pages": 5}),
        ("14:40:00", "bob", "print", "print.denied", "info",
         {"job": 12, "pages": 5, "by": "sv2"}),
        ("15:00:00", "bob", "files", "files.flagged", "warning", {"path": "/media/x.csv"}),
        ("16:00:00", "bob", "idle", "idle.lock_failed", "violation", {"error": "no session"}),
    ],
    A2: [
        ("09:00:00", "bob", "agent", "agent.started", "info", {}),
        ("09:00:01", "bob", "agent", "agent.policy_loaded", "info",
         {"hash": P1, "previous": None, "source": "/etc/floorguard/policy.toml"}),
        ("09:05:00", "bob", "usb", "usb.blocked", "violation", {"recognition": "hid-gadget"}),
        ("10:00:00", "bob", "print", "print.held", "info", {"job_id": 21, "pages": 2}),
        # an expiry does not repeat the page count: the report takes the held job's
        ("10:45:00", "bob", "print", "print.expired", "info",
         {"job_id": 21, "queue": "floor1", "expire_after": 1800.0}),
        ("13:00:00", "carol", "processes", "processes.flagged", "warning", {"name": "obs"}),
        ("13:00:05", "carol", "processes", "processes.killed", "violation", {"name": "obs"}),
        ("14:00:00", "carol", "network", "network.flagged", "violation", {"dest": "x"}),
        ("15:00:00", "carol", "agent", "agent.control_unavailable", "warning",
         {"control": "print", "reason": "cupsd not reachable"}),
        ("23:50:00", None, "files", "files.flagged", "warning", {"path": "/mnt/y.xlsx"}),
        ("00:10:00+1", None, "idle", "idle.locked", "info", {}),
    ],
    A3: [
        ("09:00:00", "dave", "agent", "agent.started", "info", {}),
        ("09:00:01", "dave", "agent", "agent.policy_loaded", "info",
         {"hash": P1, "previous": None, "source": "/etc/floorguard/policy.toml"}),
        ("10:00:00", "dave", "idle", "idle.locked", "info", {}),
        ("10:30:00", "dave", "usb", "usb.blocked", "violation", {"recognition": "storage"}),
        ("10:40:00", "dave", "usb", "usb.blocked", "violation", {"recognition": "storage"}),
        ("13:00:00", "dave", "idle", "idle.locked", "info", {}),
    ],
    B1: [
        ("10:00:00", "erin", "usb", "usb.blocked", "violation", {"recognition": "storage"}),
    ],
}


def journal(agent: str) -> list[dict[str, Any]]:
    """The agent's records, hash-chained as its journal would write them."""
    out, prev = [], GENESIS
    for seq, (t, user, control, kind, sev, details) in enumerate(PLAN[agent], start=1):
        day = DAY
        if t.endswith("+1"):
            t, day = t[:-2], "2026-11-27"
        rec = {"id": str(uuid.uuid4()), "seq": seq, "ts": local(t, day), "agent": agent,
               "host": f"pc-{SEATS[agent].lower()}", "seat": SEATS[agent], "user": user,
               "control": control, "kind": kind, "severity": sev, "policy": P1,
               "details": details, "prev": prev}
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
        out.append(rec)
    return out


def enroll_agents(engine: Engine) -> None:
    enrolled = us("00:00:00", "2026-11-01")
    with engine.begin() as conn:
        for a, seat in SEATS.items():
            conn.execute(agents.insert().values(
                id=a, token_hash=sha256_hex(TOKENS[a]), host=f"pc-{seat.lower()}", seat=seat,
                floor="2F south" if a == B1 else FLOOR, enrolled_us=enrolled))


def previous_day_policy(client: Any) -> None:
    """A1 ran P0 before the day (so the day starts with P0 in force there)."""
    rec = {"id": str(uuid.uuid4()), "seq": 1, "ts": local("09:00:00", "2026-11-25"),
           "agent": A1, "host": "pc-t-01", "seat": "T-01", "user": None, "control": "agent",
           "kind": "agent.policy_loaded", "severity": "info", "policy": P0,
           "details": {"hash": P0, "previous": None, "source": "/etc/floorguard/policy.toml"},
           "prev": GENESIS}
    rec["hash"] = record_hash(rec)
    return rec  # type: ignore[return-value]


def console_event(engine: Engine, kind: str, hhmm: str, details: dict[str, Any],
                  severity: str = "warning") -> None:
    """An event the console makes itself, through the console's own writer."""
    with engine.begin() as conn:
        record_console_event(conn, kind, severity, details, now=us(hhmm) / 1e6)


def post(client: Any, agent: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    resp = client.post("/api/v1/events", json={"events": records},
                       headers={"Authorization": f"Bearer {TOKENS[agent]}"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def load(engine: Engine, client: Any) -> None:
    """Ingest the whole fixture day through the API (and the console's own events)."""
    enroll_agents(engine)
    # A1's earlier journal: seq 1 on the 25th, then the day continues from seq 2.
    before = previous_day_policy(client)
    a1 = journal(A1)
    prev = before["hash"]  # type: ignore[index]
    for i, rec in enumerate(a1):
        rec["seq"] = i + 2
        rec["prev"] = prev
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
    post(client, A1, [before])  # type: ignore[list-item]
    post(client, A1, a1[:5])
    post(client, A1, a1[5:])
    post(client, A1, a1[3:8])  # a resend: stored once, counted once
    a2 = journal(A2)
    post(client, A2, a2)
    a3 = journal(A3)
    tampered = copy.deepcopy(a3[3])
    tampered["details"] = {"recognition": "phone"}  # altered after hashing
    post(client, A3, [*a3[:3], tampered, a3[5]])  # seq 5 never arrives
    post(client, B1, journal(B1))
    with engine.begin() as conn:
        # A3 heartbeats, then goes quiet: the console's silence check finds it at 11:05,
        # and its next heartbeat at 12:30 records the recovery.
        heartbeat(conn, A3, "running", {"interval": 30}, us("10:59:30"))
        check_silent(conn, us("11:05:00"))
        heartbeat(conn, A3, "running", {"interval": 30}, us("12:30:00"))
        for t in ("20:00:00", "20:30:00", "21:05:00"):
            heartbeat(conn, A2, "running", {"interval": 30}, us(t))
    console_event(engine, "floor.sv_ratio_exceeded", "14:10:00",
                  {"floor": FLOOR, "operators": 12, "svs": 1, "max_operators_per_sv": 10},
                  severity="violation")
