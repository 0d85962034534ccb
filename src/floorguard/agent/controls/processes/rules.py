"""The processes control's rules: which programs are forbidden and which pids a scan
looks at. Plain functions on plain data.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

from floorguard.policy import Policy

YOUNG = 5.0  # seconds a new process is looked at again (fork now, exec a moment later)


@dataclass(frozen=True)
class ProcessRules:
    forbid: tuple[str, ...] = ()
    forbid_paths: tuple[str, ...] = ()
    forbid_sha256: frozenset[str] = frozenset()
    action: str = "report"
    scan_interval: float = 1.0
    full_scan_interval: float = 30.0

    @classmethod
    def from_policy(cls, policy: Policy) -> ProcessRules:
        t = policy.get("processes")
        return cls(forbid=tuple(t.get("forbid", ())),
                   forbid_paths=tuple(t.get("forbid_paths", ())),
                   forbid_sha256=frozenset(t.get("forbid_sha256", ())),
                   action=str(t.get("action", "report")),
                   scan_interval=float(t.get("scan_interval", 1.0)),
                   full_scan_interval=float(t.get("full_scan_interval", 30.0)))


def forbidden(name: str, exe: str, rules: ProcessRules, sha256: str | None) -> str | None:
    """Why a process is forbidden (``name "obs"``, ``path "/x"``, ``sha256 ab12...``), or
    None when it is not."""
    names = {name, os.path.basename(exe)} - {""}
    for pat in rules.forbid:
        for n in sorted(names):
            if fnmatch.fnmatchcase(n, pat):
                return f'name "{pat}"'
    for pat in rules.forbid_paths:
        if exe and fnmatch.fnmatchcase(exe, pat):
            return f'path "{pat}"'
    if sha256 is not None and sha256 in rules.forbid_sha256:
        return f"sha256 {sha256}"
    return None


def scan_plan(now: float, pids: set[int], known: set[int], first_seen: dict[int, float],
              last_full: float | None, full_every: float) -> tuple[set[int], bool]:
    """Which pids to inspect this round, and whether it is a full scan."""
    if last_full is None or now - last_full >= full_every:
        return set(pids), True
    young = {p for p, t in first_seen.items() if now - t < YOUNG and p in pids}
    return (pids - known) | young, False
