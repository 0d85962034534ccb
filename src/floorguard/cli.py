"""The ``floorguard`` command line.

Each subcommand imports only what it needs, so ``floorguard check`` on an operator PC does
not load the console's web stack, and the agent process never imports SQLAlchemy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from floorguard import __version__

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _cmd_agent(args: argparse.Namespace) -> int:
    from floorguard.agent import keep_out_unused_imports

    keep_out_unused_imports()
    from floorguard.agent.daemon import Agent
    from floorguard.config import ConfigError, load_config
    from floorguard.logconfig import configure

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"floorguard agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure(config.log_level)
    return Agent(config).run()


def _cmd_check(args: argparse.Namespace) -> int:
    from floorguard.policy import PolicyError, load_policy, policy_files

    paths = args.paths
    if not paths:
        from floorguard.config import ConfigError, load_config

        try:
            paths = [load_config().policy]
        except ConfigError as exc:
            print(f"floorguard check: {exc}", file=sys.stderr)
            return EXIT_USAGE
    files = policy_files(paths)
    if not files:
        print("floorguard check: no policy files found in " + " ".join(paths), file=sys.stderr)
        return EXIT_USAGE
    bad = False
    for f in files:
        try:
            policy = load_policy(f)
        except PolicyError as exc:
            bad = True
            for problem in exc.problems:
                print(problem)
            continue
        print(policy.summary())
    return EXIT_USAGE if bad else EXIT_OK


def _state_dir(args: argparse.Namespace) -> str:
    if args.state_dir:
        return str(args.state_dir)
    from floorguard.config import load_config

    return load_config().state_dir


def _cmd_events(args: argparse.Namespace) -> int:
    from floorguard.events import parse_time, rfc3339
    from floorguard.journal import JournalError, JournalReader

    since = None
    if args.since:
        try:
            since = rfc3339(parse_time(args.since).timestamp())
        except ValueError as exc:
            print(f"floorguard events: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        reader = JournalReader(_state_dir(args))
    except JournalError as exc:
        print(f"floorguard events: {exc}", file=sys.stderr)
        return EXIT_FAIL
    with reader:
        for rec in reader.records(since_ts=since):
            if args.json:
                print(json.dumps(rec, ensure_ascii=False, sort_keys=True))
            else:
                details = json.dumps(rec.get("details", {}), ensure_ascii=False,
                                     sort_keys=True)
                print(f"{rec['seq']:>8} {rec['ts']} {rec['severity']:<9} {rec['kind']:<26} "
                      f"seat={rec.get('seat')} user={rec.get('user')} {details}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from floorguard.journal import JournalError, JournalReader

    try:
        reader = JournalReader(_state_dir(args))
    except JournalError as exc:
        print(f"floorguard verify: {exc}", file=sys.stderr)
        return EXIT_FAIL
    with reader:
        bad, why = reader.verify()
        last = reader.last_seq()
    if bad is None:
        print(f"journal intact: {last} records, chain verified")
        return EXIT_OK
    print(f"journal broken at seq {bad}: {why}")
    return EXIT_FAIL


def _cmd_console(args: argparse.Namespace) -> int:
    from floorguard.console.cli import run_console_command

    return run_console_command(args)


def _cmd_enroll(args: argparse.Namespace) -> int:
    from floorguard.agent.link.enroll import enroll_command

    return enroll_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from floorguard.console.reports.cli import report_command

    return report_command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from floorguard.demo import demo_command

    return demo_command(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="floorguard",
        description="Floor controls for call centres: USB, idle lock, print approval, "
        "leak checks, with a tamper-evident record.",
    )
    p.add_argument("--version", action="version", version=f"floorguard {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    a = sub.add_parser("agent", help="run the agent in the foreground (systemd runs it)")
    a.add_argument("--config", help="agent config file (default /etc/floorguard/agent.toml)")
    a.set_defaults(func=_cmd_agent)

    c = sub.add_parser("check", help="validate policy files (exit 2 on problems)")
    c.add_argument("paths", nargs="*", metavar="PATH", help="policy files or folders")
    c.set_defaults(func=_cmd_check)

    e = sub.add_parser("events", help="print the local journal, oldest first")
    e.add_argument("--state-dir", help="agent state directory (default from agent.toml)")
    e.add_argument("--since", metavar="TIME", help="RFC 3339 time, date, or '30m' ago")
    e.add_argument("--json", action="store_true", help="one JSON event per line")
    e.set_defaults(func=_cmd_events)

    v = sub.add_parser("verify", help="check the journal's hash chain (exit 1 when broken)")
    v.add_argument("--state-dir", help="agent state directory (default from agent.toml)")
    v.set_defaults(func=_cmd_verify)

    from floorguard.console.cli import add_console_parser

    add_console_parser(sub, _cmd_console)

    r = sub.add_parser("report", help="compliance reports from the console's store")
    rsub = r.add_subparsers(dest="report", metavar="REPORT")
    rsub.required = True
    d = rsub.add_parser("daily", help="the daily compliance summary")
    d.add_argument("--date", required=True, metavar="YYYY-MM-DD")
    d.add_argument("--format", required=True, choices=["csv", "json", "html", "pdf"])
    d.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    d.add_argument("--db", help="console database URL (default as for 'console')")
    d.add_argument("--floor", help="only this floor (default: every floor)")
    d.add_argument("--lang", choices=["en", "ja"], default="en")
    d.add_argument("--deep", action="store_true",
                   help="re-hash the day's stored records (slower) instead of relying on "
                        "the chain checks made at ingest")
    d.set_defaults(func=_cmd_report)
    rv = rsub.add_parser("verify", help="check a report file's SHA-256 against the archive")
    rv.add_argument("file", metavar="FILE")
    rv.add_argument("--db", help="console database URL (default as for 'console')")
    rv.set_defaults(func=_cmd_report)

    n = sub.add_parser("enroll", help="register this agent with a console")
    n.add_argument("--console", required=True, metavar="URL")
    n.add_argument("--code", required=True, help="one-time enrollment code from an admin")
    n.add_argument("--config", help="agent config file (default /etc/floorguard/agent.toml)")
    n.add_argument("--ca-file", help="CA bundle to verify the console's certificate")
    n.set_defaults(func=_cmd_enroll)

    m = sub.add_parser("demo", help="run a whole emulated floor on this machine")
    m.add_argument("--listen", default="127.0.0.1:8765", metavar="HOST:PORT")
    m.add_argument("--seats", type=int, default=6)
    m.add_argument("--dir", help="where to keep the demo's state (default: a temp dir)")
    m.add_argument("--duration", type=float, default=0,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    m.add_argument("--every", type=float, default=4.0,
                   help="seconds between operator actions, on average")
    m.add_argument("--keep", action="store_true", help="keep the temp dir after stopping")
    m.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

