"""``floorguard report``: the daily compliance summary from the console's store.

    floorguard report daily --date YYYY-MM-DD --format csv|json|html|pdf [-o FILE]
                            [--db URL] [--floor NAME] [--lang en|ja] [--deep]
    floorguard report verify FILE [--db URL]

``daily`` writes the report of that day (in each floor's time zone) to FILE or standard
output; ``--deep`` re-hashes the day's stored records instead of relying on the checks
made at ingest. ``verify`` computes FILE's SHA-256 and looks it up among the reports the
console archived: exit 0 and the matching archive entry when it is a genuine copy, exit 1
otherwise.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def report_command(args: argparse.Namespace) -> int:
    from floorguard.console.store.db import StoreError, default_url, open_store

    try:
        engine = open_store(args.db or default_url())
    except StoreError as exc:
        print(f"floorguard report: {exc}", file=sys.stderr)
        return EXIT_FAIL
    try:
        if args.report == "verify":
            return _verify(engine, args.file)
        return _daily(engine, args)
    finally:
        engine.dispose()


def _daily(engine: object, args: argparse.Namespace) -> int:
    from floorguard.console.reports.daily import build_report
    from floorguard.console.reports.render import render
    from floorguard.policy import PolicyError

    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        print(f"floorguard report daily: --date {args.date!r}: write YYYY-MM-DD",
              file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout.buffer
    if not args.output and args.format in ("pdf", "csv") and sys.stdout.isatty():
        print(f"floorguard report daily: a {args.format} report is binary: give -o FILE",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            doc = build_report(conn, day, [args.floor] if args.floor else None,
                               lang=args.lang, deep=bool(getattr(args, "deep", False)))
    except PolicyError as exc:
        print("floorguard report daily: a floor policy does not load:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return EXIT_FAIL
    data = render(doc, args.format)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data)
    else:
        out.write(data)
        out.flush()
    return EXIT_OK


def _verify(engine: object, path: str) -> int:
    from floorguard.console.reports.archive import find_digest, sha256_file

    try:
        digest = sha256_file(path)
    except OSError as exc:
        print(f"floorguard report verify: cannot read {path}: {exc.strerror}",
              file=sys.stderr)
        return EXIT_USAGE
    with engine.connect() as conn:  # type: ignore[attr-defined]
        hits = find_digest(conn, digest)
    if not hits:
        print(f"{path}: sha256 {digest} matches no archived report")
        return EXIT_FAIL
    for h in hits:
        print(f"{path}: sha256 {digest} matches the archived {h['format']} report of "
              f"{h['day']} ({h['floor'] or 'all floors'}, {h['lang']}), archived as "
              f"{h['path']}")
    return EXIT_OK
