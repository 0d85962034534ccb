"""``floorguard console``: serve the console, manage accounts and enrollment codes.

    floorguard console [--db URL] [--listen HOST:PORT] [--tls-cert F --tls-key F]
    floorguard console user add NAME --role admin|sv|auditor [--floor F]...  (password on
                                           stdin or asked)
    floorguard console user floors NAME [--set F1,F2]   (show or replace its floors)
    floorguard console user passwd NAME | user disable NAME | user enable NAME | user list
    floorguard console user unlock NAME | user unlock --address IP   (lift a sign-in lock)
    floorguard console enroll-code [--floor NAME] [--expires 24h] [--agent ID]
    floorguard console agent list | agent revoke ID
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_console_parser(sub: Any, func: Any) -> None:
    c = sub.add_parser("console", help="serve the web console, or manage its accounts")
    c.add_argument("--db", help="database URL (default sqlite under /var/lib/floorguard-console"
                                 ", or $FLOORGUARD_DB)")
    c.add_argument("--listen", default=None, metavar="HOST:PORT",
                   help="address to serve on (default 127.0.0.1:8080, or $FLOORGUARD_LISTEN)")
    c.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    c.add_argument("--tls-key", help="the certificate's private key (PEM)")
    c.set_defaults(func=func, console_cmd="serve")
    csub = c.add_subparsers(dest="console_cmd", metavar="ACTION")

    u = csub.add_parser("user", help="manage console accounts")
    usub = u.add_subparsers(dest="user_cmd", metavar="ACTION")
    usub.required = True
    add = usub.add_parser("add", help="create an account (password from stdin when piped)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["admin", "sv", "auditor"])
    add.add_argument("--floor", action="append", default=[], metavar="FLOOR",
                     help="a floor the account works on (repeat, or F1,F2); an SV sees and "
                          "acts on its floors only, an auditor with none reads every floor")
    fl = usub.add_parser("floors", help="show or set the floors an account works on")
    fl.add_argument("name")
    fl.add_argument("--set", dest="set_floors", metavar="F1,F2",
                    help="replace the account's floors ('' for none)")
    for name, text in (("passwd", "set a new password"), ("disable", "disable an account"),
                       ("enable", "enable a disabled account")):
        p = usub.add_parser(name, help=text)
        p.add_argument("name")
    usub.add_parser("list", help="list accounts")
    un = usub.add_parser("unlock", help="lift a sign-in lock now: an account's failures "
                                        "from every address, or (--address) the failures "
                                        "under made-up names from one address")
    un.add_argument("name", nargs="?", default=None)
    un.add_argument("--address", default=None, metavar="IP",
                    help="with NAME: only that address's failures for the account")

    ag = csub.add_parser("agent", help="list or revoke enrolled agents")
    agsub = ag.add_subparsers(dest="agent_cmd", metavar="ACTION")
    agsub.required = True
    rv = agsub.add_parser("revoke", help="refuse an agent's credential from now on")
    rv.add_argument("agent_id", metavar="ID")
    agsub.add_parser("list", help="list agents with their state")

    e = csub.add_parser("enroll-code", help="make a one-time code to enroll an agent")
    e.add_argument("--floor", default="", help="floor the enrolled agent belongs to")
    e.add_argument("--expires", default="24h", help="how long the code is valid (e.g. 2h)")
    e.add_argument("--agent", metavar="ID", default=None,
                   help="re-enroll this enrolled agent only (a PC that lost its token); "
                        "without it the code enrolls a new agent")


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen {text!r}: write HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def _read_password(confirm: bool = True) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise ValueError("the passwords differ")
    return first


def run_console_command(args: argparse.Namespace) -> int:
    import os

    from floorguard.console.store.db import StoreError, default_url, open_store

    url = args.db or default_url()
    if args.console_cmd in (None, "serve"):
        return _serve(args, url)
    try:
        engine = open_store(url)
    except StoreError as exc:
        print(f"floorguard console: {exc}", file=sys.stderr)
        return EXIT_FAIL
    actor = "cli:" + (os.environ.get("SUDO_USER") or os.environ.get("USER") or "root")
    try:
        if args.console_cmd == "user":
            return _user(args, engine, actor)
        if args.console_cmd == "enroll-code":
            return _enroll_code(args, engine, actor)
        if args.console_cmd == "agent":
            return _agent(args, engine, actor)
    finally:
        engine.dispose()
    return EXIT_USAGE


def _user(args: argparse.Namespace, engine: Any, actor: str) -> int:
    from floorguard.console.auth import (
        AuthError,
        add_user,
        audit,
        list_users,
        set_disabled,
        set_password,
    )
    from floorguard.console.membership import all_memberships

    if args.user_cmd == "unlock":
        return _unlock(args, engine, actor)
    try:
        with engine.begin() as conn:
            if args.user_cmd == "list":
                floors = all_memberships(conn)
                for u in list_users(conn):
                    state = "disabled" if u["disabled"] else "active"
                    print(f"{u['name']}\t{u['role']}\t{state}\t"
                          f"{_floors_text(u['role'], floors.get(u['name'], []))}")
                return EXIT_OK
            if args.user_cmd == "floors":
                return _user_floors(args, conn, actor)
            if args.user_cmd == "add":
                from floorguard.console.membership import parse_floors, set_floors
                from floorguard.console.store.db import now_us

                wanted = parse_floors(args.floor)
                add_user(conn, args.name, args.role, _read_password())
                audit(conn, actor, "user.added", args.name, "", {"role": args.role})
                if wanted:
                    set_floors(conn, args.name, wanted, now_us())
                    audit(conn, actor, "user.floors_set", args.name, "", {"floors": wanted})
            elif args.user_cmd == "passwd":
                set_password(conn, args.name, _read_password())
                audit(conn, actor, "user.password_set", args.name)
            elif args.user_cmd in ("disable", "enable"):
                set_disabled(conn, args.name, args.user_cmd == "disable")
                audit(conn, actor, f"user.{args.user_cmd}d", args.name)
    except (AuthError, ValueError) as exc:
        print(f"floorguard console user {args.user_cmd}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"user {args.name}: {args.user_cmd} done")
    return EXIT_OK


def _floors_text(role: str, floors: list[str]) -> str:
    if role == "admin":
        return "all floors"
    if not floors:
        return "all floors" if role == "auditor" else "no floors"
    return ",".join(floors)


def _user_floors(args: argparse.Namespace, conn: Any, actor: str) -> int:
    """``user floors NAME``: the account's floors; with ``--set``, replace them."""
    import sqlalchemy as sa

    from floorguard.console.auth import AuthError
    from floorguard.console.membership import floors_of, parse_floors, set_floors
    from floorguard.console.store.db import now_us
    from floorguard.console.store.schema import users

    row = conn.execute(sa.select(users.c.id, users.c.role).where(users.c.name == args.name)
                       ).first()
    if row is None:
        raise AuthError(f"no user {args.name!r} (see 'floorguard console user list')")
    if args.set_floors is not None:
        wanted = parse_floors([args.set_floors])
        lost = set_floors(conn, args.name, wanted, now_us())
        from floorguard.console.auth import audit

        audit(conn, actor, "user.floors_set", args.name, "", {"floors": wanted,
                                                              "removed": lost})
        if row.role == "admin" and wanted:
            print(f"note: {args.name} is an admin and sees every floor whatever is set",
                  file=sys.stderr)
    print(f"{args.name}\t{row.role}\t{_floors_text(row.role, sorted(floors_of(conn, row.id)))}")
    return EXIT_OK


def _unlock(args: argparse.Namespace, engine: Any, actor: str) -> int:
    import sqlalchemy as sa

    from floorguard.console.auth import audit
    from floorguard.console.store.schema import users
    from floorguard.console.throttle import unlock

    if args.name is None and args.address is None:
        print("floorguard console user unlock: name an account, or give --address IP",
              file=sys.stderr)
        return EXIT_USAGE
    with engine.begin() as conn:
        if args.name is not None and conn.execute(
                sa.select(users.c.id).where(users.c.name == args.name)).first() is None:
            print(f"floorguard console user unlock: no user {args.name!r} (see 'floorguard "
                  "console user list')", file=sys.stderr)
            return EXIT_FAIL
        gone = unlock(conn, args.name, args.address)
        audit(conn, actor, "user.unlocked", args.name or "", args.address or "",
              {"failures_forgotten": gone})
    what = args.name if args.name is not None else f"made-up names from {args.address}"
    print(f"{what}: unlocked ({gone} recent failures forgotten)")
    return EXIT_OK


def _agent(args: argparse.Namespace, engine: Any, actor: str) -> int:
    from floorguard.console.store.db import now_us
    from floorguard.console.web.fleet import list_agents, revoke_agent

    with engine.begin() as conn:
        if args.agent_cmd == "list":
            for a in list_agents(conn, now_us()):
                print(f"{a['id']}\t{a['floor']}\t{a['seat']}\t{a['host']}\t{a['state']}")
            return EXIT_OK
        if not revoke_agent(conn, args.agent_id, actor):
            print(f"floorguard console agent revoke: no agent {args.agent_id} (see "
                  "'floorguard console agent list')", file=sys.stderr)
            return EXIT_FAIL
    print(f"agent {args.agent_id}: revoked; its token is refused from now on")
    return EXIT_OK


def _enroll_code(args: argparse.Namespace, engine: Any, actor: str) -> int:
    from floorguard.policy import parse_duration

    try:
        ttl = parse_duration(args.expires)
    except ValueError as exc:
        print(f"floorguard console enroll-code: --expires: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code = create_enrollment_code(engine, actor, args.floor, ttl, agent_id=args.agent)
    except ValueError as exc:
        print(f"floorguard console enroll-code: --agent: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(code)
    return EXIT_OK


def create_enrollment_code(engine: Any, actor: str, floor: str, ttl: float,
                           agent_id: str | None = None) -> str:
    """A one-time code for a new agent, or with ``agent_id`` for re-enrolling that agent
    (``ValueError`` for an unknown or revoked one)."""
    from floorguard.console.enrollment import create_code

    with engine.begin() as conn:
        return create_code(conn, actor, floor, ttl, agent_id)


def _serve(args: argparse.Namespace, url: str) -> int:
    import os

    import uvicorn

    from floorguard.console.app import create_app
    from floorguard.console.store.db import StoreError, open_store
    from floorguard.logconfig import configure

    try:
        host, port = _parse_listen(args.listen or os.environ.get("FLOORGUARD_LISTEN",
                                                                 "127.0.0.1:8080"))
    except ValueError as exc:
        print(f"floorguard console: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if bool(args.tls_cert) != bool(args.tls_key):
        print("floorguard console: give both --tls-cert and --tls-key", file=sys.stderr)
        return EXIT_USAGE
    configure(os.environ.get("FLOORGUARD_LOG_LEVEL", "info"))
    try:
        engine = open_store(url)
    except StoreError as exc:
        print(f"floorguard console: {exc}", file=sys.stderr)
        return EXIT_FAIL
    app = create_app(engine=engine)
    scheme = "https" if args.tls_cert else "http"
    print(f"floorguard console on {scheme}://{host}:{port}/ (store: {engine.url!r})",
          file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then raises the signal again
    # with the handler it found at start; with this one in place the process exits 0
    # after a clean stop instead of dying of the re-raised signal.
    import signal

    from floorguard.console.http_server import (
        HEADER_TIMEOUT_S,
        PER_ADDRESS,
        ConnectionGuard,
        guarded_protocol,
        throttle_logs,
    )

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        guard = ConnectionGuard(per_address=_env_int(
            "FLOORGUARD_MAX_CONNECTIONS_PER_ADDRESS", PER_ADDRESS))
        header_timeout = float(_env_int("FLOORGUARD_HEADER_TIMEOUT", int(HEADER_TIMEOUT_S)))
    except ValueError as exc:
        print(f"floorguard console: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = uvicorn.Config(
        app, host=host, port=port, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
        log_level="warning", proxy_headers=False, server_header=False,
        http=guarded_protocol(guard, header_timeout),
        timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024,
        # agents' command long-polls stay open for 25 s: do not wait them out
        timeout_graceful_shutdown=2)
    throttle_logs()  # after uvicorn's Config has set up its loggers
    print(f"floorguard console: at most {guard.per_address} connections per address, "
          f"{guard.total} in all; request headers within {header_timeout:g} s",
          file=sys.stderr, flush=True)
    uvicorn.Server(config).run()
    return EXIT_OK


def _env_int(name: str, default: int) -> int:
    import os

    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"${name}={text!r}: write a positive whole number (default "
                         f"{default}), or unset it")
    return int(text)
