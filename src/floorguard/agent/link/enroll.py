"""``floorguard enroll``: trade a one-time code for this agent's own token.

The token is written to the configured token file with mode 0600; the console keeps only
its hash, bound to this agent's id.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from floorguard.agent.identity import agent_id
from floorguard.config import ConfigError, load_config


def enroll_command(args: argparse.Namespace) -> int:
    import httpx

    from floorguard.agent.link.shipper import LinkConfigError, check_url

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"floorguard enroll: {exc}", file=sys.stderr)
        return 2
    url = args.console.rstrip("/")
    try:
        check_url(url, allow_insecure=config.allow_insecure_http)
    except LinkConfigError as exc:
        print(f"floorguard enroll: {exc}", file=sys.stderr)
        return 2
    ident = agent_id(config.state_dir)
    from floorguard.agent.link.shipper import system_trust

    ca = args.ca_file or config.ca_file
    if ca:
        import ssl

        verify = ssl.create_default_context(cafile=ca)
    else:  # the same trust as the link will use
        verify = system_trust()
    body = {"code": args.code, "agent_id": ident, "host": socket.gethostname(),
            "seat": config.seat_label}
    try:
        resp = httpx.post(f"{url}/api/v1/enroll", json=body, verify=verify, timeout=15)
    except httpx.HTTPError as exc:
        print(f"floorguard enroll: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if resp.status_code != 200:
        try:
            why = resp.json().get("detail")
        except ValueError:
            why = resp.text[:200]
        print(f"floorguard enroll: the console refused: {why}", file=sys.stderr)
        return 1
    token = resp.json()["token"]
    write_secret(config.token_path, token)
    print(f"enrolled agent {ident} (seat {config.seat_label}) with {url}; "
          f"token stored in {config.token_path}")
    return 0


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
