"""The event record: one shape for the journal, the API and every export.

An event's ``hash`` is SHA-256 over the previous record's hash and the canonical JSON of
the record itself (every field but ``hash``, keys sorted, no spaces, UTF-8). Changing,
removing or reordering any record therefore breaks the chain at that record.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64

CONTROLS = ("usb", "idle", "print", "files", "processes", "network", "agent", "floor")
SEVERITIES = ("info", "warning", "violation")

KINDS = frozenset(
    {
        "usb.blocked", "usb.allowed", "usb.removed",
        "idle.warned", "idle.locked", "idle.lock_failed", "idle.unlocked",
        "idle.inhibited", "idle.source_stale", "idle.suspended",
        "print.held", "print.approved", "print.denied", "print.expired", "print.released",
        "print.misconfigured", "print.hold_restored", "print.decision_failed",
        "files.flagged", "files.copied", "files.mounted",
        "processes.flagged", "processes.killed",
        "network.flagged", "network.interface",
        "agent.started", "agent.stopped", "agent.policy_loaded", "agent.policy_rejected",
        "agent.control_unavailable", "agent.command", "agent.gap",
        # made by the console
        "agent.silent", "agent.recovered", "agent.chain_broken", "floor.sv_ratio_exceeded",
    }
)

# Kinds only the console makes (``console.console_events``). An agent that sends one is
# refused at ingest: these kinds judge agents and floors, so an agent's word for them is
# worthless, and they are the only records that may name a subject (``details.agent``,
# ``details.floor``) other than their sender.
CONSOLE_KINDS = frozenset(
    {"agent.silent", "agent.recovered", "agent.chain_broken", "floor.sv_ratio_exceeded"})

# The fields of a record in the order the contract names them.
FIELDS = ("id", "seq", "ts", "agent", "host", "seat", "user", "control", "kind", "severity",
          "policy", "details", "prev", "hash")


# json.dumps with these options builds an encoder on every call; the console hashes a
# thousand records a batch, so the one encoder is kept (it holds only its options).
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode


def canonical_json(obj: Any) -> str:
    return _canonical(obj)


def record_hash(record: dict[str, Any]) -> str:
    """The chain hash of a record (its ``hash`` field, if present, is left out)."""
    body = dict(record)
    body.pop("hash", None)
    h = hashlib.sha256()
    h.update(str(record.get("prev", "")).encode("ascii"))
    h.update(b"\n")
    h.update(canonical_json(body).encode("utf-8"))
    return h.hexdigest()


_id_lock = threading.Lock()
_last_id = [0, 0]


def new_id(now: float | None = None) -> str:
    """A UUIDv7-shaped id: 48 bits of milliseconds then randomness, strictly increasing
    within this process so that ids sort in the order they were made."""
    ms = int((time.time() if now is None else now) * 1000)
    with _id_lock:
        if ms <= _last_id[0]:
            ms = _last_id[0]
            _last_id[1] += 1
        else:
            _last_id[1] = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last_id[0] = ms
        counter = _last_id[1] & 0xFFF
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def parse_time(text: str) -> datetime:
    """RFC 3339, a date (midnight UTC), or a relative time like ``10m`` / ``2h`` ago."""
    from .policy import parse_duration  # local: policy is not needed to write events

    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    if _RFC3339.match(text):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    try:
        ago = parse_duration(text)
    except ValueError:
        raise ValueError(
            f'cannot read the time "{text}": write an RFC 3339 time '
            '(2026-11-28T09:00:00Z), a date (2026-11-28) or a duration ago ("30m")'
        ) from None
    return datetime.fromtimestamp(time.time() - ago, UTC)


def verify_chain(
    records: list[dict[str, Any]], start_seq: int = 1, start_prev: str = GENESIS,
    gaps: dict[int, tuple[int, str]] | None = None,
) -> tuple[int | None, str]:
    """Check a run of records; return (first bad seq or None, why).

    ``gaps`` maps the first seq of each documented hole (info records dropped when the
    journal reached its size cap) to ``(last seq of the hole, hash of that last record)``:
    the record after the hole must link to that hash, so a hole is only accepted where it
    was declared and the chain stays verifiable across it."""
    expect_seq, prev = start_seq, start_prev
    for rec in records:
        seq = rec.get("seq")
        hole = (gaps or {}).get(expect_seq)
        if hole is not None and seq == hole[0] + 1:
            expect_seq, prev = seq, hole[1]
        if seq != expect_seq:
            return expect_seq, f"expected seq {expect_seq}, found {seq}"
        if rec.get("prev") != prev:
            return seq, "prev does not match the hash of the record before it"
        if record_hash(rec) != rec.get("hash"):
            return seq, "hash does not match the record's content"
        prev = rec["hash"]
        expect_seq += 1
    return None, "intact"
