"""The print control's rules: which queues are held, when a job needs a note, prints
unasked or expires, how pages are counted from a document's bytes, and whether a cupsd
policy keeps operators out. Plain functions on plain data: nothing here touches CUPS.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable
from typing import Any

from floorguard.policy import PrintSettings

PROTECTED_OPS = ("Release-Job", "Set-Job-Attributes", "Cancel-Job")


def holds(rules: PrintSettings) -> bool:
    """Whether queues are held at all (approval required, or a page limit to check)."""
    return rules.approval == "required" or rules.note_above_pages is not None


def queue_selected(queue: str, queues: Iterable[str], exempt: Iterable[str]) -> bool:
    """A queue is held when a ``queues`` glob names it and no ``exempt`` glob does."""
    return (any(fnmatch.fnmatchcase(queue, g) for g in queues)
            and not any(fnmatch.fnmatchcase(queue, g) for g in exempt))


def needs_note(pages: int | None, note_above: int | None) -> bool:
    """Approving a job above the page limit needs a note; a job whose page count is
    unknown might be above it, so it needs one too."""
    if note_above is None:
        return False
    return pages is None or pages > note_above


def auto_release(rules: PrintSettings, pages: int | None) -> bool:
    """With approval off, only jobs known to be within the page limit print unasked."""
    return (rules.approval == "off" and rules.note_above_pages is not None
            and pages is not None and pages <= rules.note_above_pages)


def expired(seen_at: float, now: float, expire_after: float) -> bool:
    return now - seen_at >= expire_after


def text_pages(data: bytes, lines_per_page: int = 60) -> int:
    """Pages a plain-text job will take, estimated as the text filter lays it out: form
    feeds start a page, otherwise ``lines_per_page`` lines fill one."""
    text = data.decode("utf-8", "replace")
    pages = 0
    for chunk in text.split("\f"):
        lines = chunk.count("\n") + (0 if chunk.endswith("\n") or not chunk else 1)
        pages += max(1, math.ceil(lines / lines_per_page))
    return pages


_DSC_PAGES = re.compile(rb"^%%Pages:\s*(\d+)\s*$", re.M)


def postscript_pages(data: bytes) -> int | None:
    m = _DSC_PAGES.search(data[:65536]) or _DSC_PAGES.search(data[-65536:])
    return int(m.group(1)) if m else None


def parse_pdfinfo_pages(output: str) -> int:
    m = re.search(r"^Pages:\s+(\d+)\s*$", output, re.M)
    if not m:
        raise ValueError("pdfinfo printed no page count")
    return int(m.group(1))


def cupsd_policy_problems(text: str, policy_name: str = "default") -> list[str]:
    """What in cupsd.conf would let an operator release, alter or cancel their own held
    job. For each protected operation, the ``<Limit>`` that names it (else ``<Limit
    All>``) inside ``<Policy policy_name>`` must require authentication (an ``AuthType``
    other than None) and admit only named users or groups, never ``@OWNER``, nor any
    ``valid-user``: a limit without ``AuthType`` trusts whatever name the client claims."""
    policies: dict[str, list[tuple[set[str], dict[str, str]]]] = {}
    current: list[tuple[set[str], dict[str, str]]] | None = None
    limit: tuple[set[str], dict[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        low = line.lower()
        if low.startswith("<policy"):
            name = line[len("<policy"):].rstrip(">").strip()
            current = policies.setdefault(name, [])
        elif low.startswith("</policy"):
            current = None
        elif low.startswith("<limit") and current is not None:
            ops = {op.lower() for op in line[len("<limit"):].rstrip(">").split()}
            limit = (ops, {})
            current.append(limit)
        elif low.startswith("</limit"):
            limit = None
        elif limit is not None:
            key, _, value = line.partition(" ")
            limit[1][key.lower()] = value.strip()
    if policy_name not in policies:
        return [f"cupsd.conf has no <Policy {policy_name}>: cupsd's built-in policy lets "
                "job owners release and cancel their own jobs"]
    problems = []
    for op in PROTECTED_OPS:
        limits = policies[policy_name]
        found = next((d for ops, d in limits if op.lower() in ops), None)
        if found is None:
            found = next((d for ops, d in limits if "all" in ops), None)
        if found is None:
            problems.append(f"{op}: no <Limit> in <Policy {policy_name}> covers it")
            continue
        auth = found.get("authtype", "").lower()
        require = found.get("require", "").lower().split()
        if not auth or auth == "none":
            problems.append(f"{op}: the <Limit> has no AuthType, so cupsd trusts the user "
                            "name the client claims")
        elif not require or require[0] == "valid-user":
            problems.append(f"{op}: any authenticated user may do it")
        elif require[0] == "user" and "@owner" in require[1:]:
            problems.append(f"{op}: the job's owner may do it (Require user @OWNER)")
    return problems


def _validate_decision(args: Any) -> str | None:
    if not isinstance(args, dict):
        return "print.decide takes an object"
    jid = args.get("job_id")
    if isinstance(jid, bool) or not isinstance(jid, int) or jid <= 0:
        return "job_id must be a positive integer"
    if args.get("decision") not in ("approve", "deny"):
        return "decision must be 'approve' or 'deny'"
    by = args.get("by")
    if not isinstance(by, str) or not by.strip() or len(by) > 64:
        return "by must name the deciding SV (1-64 characters)"
    for key in ("reason", "note"):
        if args.get(key) is not None and (not isinstance(args[key], str)
                                          or len(args[key]) > 1000):
            return f"{key} must be text of at most 1000 characters"
    return None
