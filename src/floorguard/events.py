"""The event record: one shape for the journal, the API and every export.

An event's ``hash`` is SHA-256 over the previous record's hash and the canonical JSON of
the record itself (every field but ``hash``, keys sorted, no spaces, UTF-8). Changing,
removing or reordering any record therefore breaks the chain at that record.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
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

class Command(enum.StrEnum):
    """The commands the console sends an agent (over the link's long-poll), named like
    the kinds: the control that carries it out, then what it does."""

    PRINT_DECIDE = "print.decide"  # approve or deny a held print job
    LOCK_SEAT = "idle.lock_seat"  # lock the operator's session now
    RELOAD_POLICY = "agent.reload_policy"  # apply the floor's policy (or re-read the file)


COMMANDS = frozenset(Command)

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
    from floorguard.policy import parse_duration  # local: policy is not needed to write events

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


# --- the chain walker ---------------------------------------------------------------------
#
# One walk, one meaning, for ``floorguard verify`` (the agent's journal), the console's
# check at ingest and the daily report.
#
# A **declared gap** is a run of seqs the agent's journal dropped when it reached its size
# cap with records not yet shipped (info records only; warnings and violations are never
# dropped). The journal keeps the run with the hash of its last dropped record and writes a
# chained ``agent.gap`` warning about it; the link declares it to the console with the
# batch that jumps over it. A declared gap is **not a fault**: the chain is intact across
# it when the record after it links (``prev``) to the declared hash. It is counted apart
# (records dropped and declared), never as missing. Every other hole is a fault: an
# undeclared one is ``missing``, a declared one whose next record does not link to the
# declared hash is ``bad_gap``.

REASONS = {
    "altered": "the record's hash does not match its content",
    "unlinked": "the record's prev is not the hash of the record before it",
    "missing": "records are missing and the agent did not declare the hole",
    "bad_gap": "the record after a declared hole does not link to the hole's last hash",
    "out_of_order": "the record's seq is not after the one before it",
    "declared_gap": "records dropped at the journal's size cap, declared by the agent",
}


@dataclass(frozen=True)
class DeclaredGap:
    """Seqs ``from_seq..to_seq`` dropped by the agent; ``last_hash`` is the hash of the
    record ``to_seq``, which the record after the gap must name as its ``prev``."""

    from_seq: int
    to_seq: int
    last_hash: str
    count: int = 0


@dataclass(frozen=True)
class Finding:
    """What the walk found at the record with seq ``at``: ``reason`` (a key of
    ``REASONS``) over the seqs ``first..last``. Every reason but ``declared_gap`` is a
    fault."""

    reason: str
    first: int
    last: int
    at: int

    @property
    def fault(self) -> bool:
        return self.reason != "declared_gap"

    @property
    def why(self) -> str:
        return REASONS[self.reason]

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class ChainWalker:
    """Walks one agent's records in seq order from ``(seq, prev)``: the last record
    already walked (``0, GENESIS`` for a whole chain; ``prev=None`` when the record before
    is not at hand, so the first link cannot be checked).

    ``look(rec)`` says what the next record would find without moving; ``step(rec)``
    also moves past it. ``hash_ok`` lets a caller that has already hashed the record
    (ingest checks every record once) pass the answer instead of hashing again."""

    def __init__(self, seq: int = 0, prev: str | None = GENESIS,
                 gaps: Iterable[DeclaredGap] = ()):
        self.seq = seq
        self.prev = prev
        self.gaps = sorted(gaps, key=lambda g: g.from_seq)

    def _declared(self, first: int, last: int) -> DeclaredGap | None:
        """The declared gap that covers the hole ``first..last`` and ends where it ends
        (a gap may start earlier: records of it the console already holds)."""
        for g in self.gaps:
            if g.from_seq <= first and g.to_seq == last:
                return g
        return None

    def look(self, rec: dict[str, Any], hash_ok: bool | None = None) -> list[Finding]:
        at = rec.get("seq")
        if not isinstance(at, int) or isinstance(at, bool) or at <= self.seq:
            bad = at if isinstance(at, int) and not isinstance(at, bool) else self.seq + 1
            return [Finding("out_of_order", self.seq + 1, self.seq + 1, bad)]
        out: list[Finding] = []
        if at > self.seq + 1:
            first, last = self.seq + 1, at - 1
            gap = self._declared(first, last)
            if gap is None:
                out.append(Finding("missing", first, last, at))
            elif rec.get("prev") == gap.last_hash:
                out.append(Finding("declared_gap", first, last, at))
            else:
                out.append(Finding("bad_gap", first, last, at))
        elif self.prev is not None and rec.get("prev") != self.prev:
            out.append(Finding("unlinked", max(self.seq, 1), at, at))
        if hash_ok is None:
            hash_ok = record_hash(rec) == rec.get("hash")
        if not hash_ok:
            out.append(Finding("altered", at, at, at))
        return out

    def step(self, rec: dict[str, Any], hash_ok: bool | None = None) -> list[Finding]:
        found = self.look(rec, hash_ok)
        if not any(f.reason == "out_of_order" for f in found):
            self.seq, self.prev = int(rec["seq"]), str(rec.get("hash"))
        return found


def verify_chain(
    records: Iterable[dict[str, Any]], start_seq: int = 1, start_prev: str = GENESIS,
    gaps: dict[int, tuple[int, str]] | Iterable[DeclaredGap] | None = None,
) -> tuple[int | None, str]:
    """Check a run of records with ``ChainWalker``; return (first bad seq or None, why).

    ``gaps`` are the declared gaps (``DeclaredGap``, or a dict from a gap's first seq to
    ``(last seq, hash of that last record)``): a hole is only accepted where it was
    declared and the record after it links to the declared hash."""
    if isinstance(gaps, dict):
        declared = [DeclaredGap(a, b, h) for a, (b, h) in gaps.items()]
    else:
        declared = list(gaps or ())
    walker = ChainWalker(start_seq - 1, start_prev, declared)
    for rec in records:
        for f in walker.step(rec):
            if not f.fault:
                continue
            if f.reason in ("missing", "out_of_order"):
                return f.first, f"expected seq {f.first}, found {rec.get('seq')}"
            if f.reason in ("unlinked", "bad_gap"):
                return f.at, "prev does not match the hash of the record before it"
            return f.at, "hash does not match the record's content"
    return None, "intact"
