"""A login burst against a live console: N concurrent wrong passwords for one account
plus the right one in the middle, and a stranger's made-up names from the same address.

Starts a real console (uvicorn, loopback, free port) on a fresh SQLite file, fires the
burst from threads, samples the console process's RSS with psutil every 10 ms, and
reports the status codes, how many password checks ran (``login.failed`` and ``login``
audit rows), whether the right password got in, and the peak RSS. Then it sends 20
made-up names and checks that the real account can still sign in from that address.
Stops the console it started.

    python bench/login_burst.py [--wrong 40] [--dir DIR]

Targets: at most 5 password checks for the account; peak RSS well under 1 GB.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.rigs.console import LiveConsole  # noqa: E402
from tests.rigs.processes import PASSWORD  # noqa: E402

from floorguard.console.auth import add_user  # noqa: E402
from floorguard.console.store.db import open_store  # noqa: E402
from floorguard.console.store.schema import audit_log  # noqa: E402


def burst(url: str, name: str, wrong: int) -> tuple[collections.Counter[int], int | None]:
    codes: collections.Counter[int] = collections.Counter()
    right: list[int] = []
    start = threading.Barrier(wrong + 1)

    def one(password: str, is_right: bool) -> None:
        start.wait()
        resp = httpx.post(url + "/login", data={"username": name, "password": password},
                          timeout=60)
        codes[resp.status_code] += 1
        if is_right:
            right.append(resp.status_code)

    threads = [threading.Thread(target=one, args=("wrong password!", False))
               for _ in range(wrong // 2)]
    threads.append(threading.Thread(target=one, args=(PASSWORD, True)))
    threads += [threading.Thread(target=one, args=("wrong password!", False))
                for _ in range(wrong - wrong // 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes, right[0] if right else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wrong", type=int, default=40)
    ap.add_argument("--dir", help="work folder (default: a temp folder, removed after)")
    args = ap.parse_args()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="fg-login-"))
    db_url = f"sqlite:///{workdir}/console.db"
    engine = open_store(db_url)
    with engine.begin() as conn:
        add_user(conn, "sv-burst", "sv", PASSWORD)
        add_user(conn, "admin-burst", "admin", PASSWORD)
    live = LiveConsole(workdir, db_url=db_url)
    peak = 0
    stop = threading.Event()
    try:
        live.start()
        assert live.proc is not None
        proc = psutil.Process(live.proc.pid)
        base = proc.memory_info().rss

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, proc.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        codes, right = burst(live.url, "sv-burst", args.wrong)
        took = time.monotonic() - t0
        stop.set()
        sampler.join()
        with engine.connect() as conn:
            checks = conn.execute(sa.select(sa.func.count()).select_from(audit_log).where(
                audit_log.c.actor == "sv-burst",
                audit_log.c.action.in_(("login", "login.failed")))).scalar()
        print(f"burst: {args.wrong} wrong + 1 right for one account in {took:.2f} s")
        print(f"  status codes: {dict(sorted(codes.items()))}")
        print(f"  password checks run: {checks}; right password answered {right}")
        print(f"  console RSS: {base / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB")
        for i in range(20):
            httpx.post(live.url + "/login", data={"username": f"nobody-{i}",
                                                  "password": "guess guess"}, timeout=30)
        made_up = httpx.post(live.url + "/login", data={"username": "nobody-x",
                                                        "password": "guess guess"},
                             timeout=30).status_code
        admin = httpx.post(live.url + "/login", data={"username": "admin-burst",
                                                      "password": PASSWORD},
                           timeout=30).status_code
        print(f"after 20 made-up names from this address: a 21st gets {made_up}, "
              f"the real admin gets {admin} (303 = signed in)")
    finally:
        stop.set()
        live.stop()
        engine.dispose()
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
