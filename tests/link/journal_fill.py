"""Filling an agent's journal before the agent starts, through the journal's own writer,
so tests have thousands of real chained records to ship."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from floorguard.agent.identity import agent_id
from floorguard.journal import Journal


def fill(state_dir: Path, count: int, *, every_warning: int = 0, pad: int = 0,
         seat: str = "T-01") -> list[dict[str, Any]]:
    """Append ``count`` events (a warning every ``every_warning``-th, else info) and
    return them as stored."""
    aid = agent_id(state_dir)
    entries = []
    with Journal(state_dir) as journal:
        for i in range(count):
            warn = every_warning and (i + 1) % every_warning == 0
            entries.append(journal.append({
                "agent": aid, "host": "pc-test", "seat": seat, "user": "alice",
                "control": "usb", "kind": "usb.blocked" if warn else "usb.allowed",
                "severity": "warning" if warn else "info", "policy": "",
                "details": {"n": i, "pad": "x" * pad}}))
        return [e.wait(30) for e in entries]
