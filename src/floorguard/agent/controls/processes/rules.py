"""The processes control's rules: which programs are forbidden and which pids a scan
looks at. Plain functions on plain data.
"""

from __future__ import annotations

import fnmatch
import os

from floorguard.policy import ProcessesSettings

YOUNG = 5.0  # seconds a new process is looked at again (fork now, exec a moment later)


def forbidden(name: str, exe: str, rules: ProcessesSettings, sha256: str | None) -> str | None:
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
