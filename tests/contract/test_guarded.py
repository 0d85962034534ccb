"""Long-lived threads under the guarded loop: a failure restarts and is counted, shipping
resumes, and a thread that must live and is dead stops the systemd keep-alives."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from floorguard.agent.daemon import Agent
from floorguard.agent.guarded import Backoff, GuardedThread, Guards
from floorguard.agent.link.shipper import Link
from floorguard.config import load_config
from floorguard.journal import JournalReader
from floorguard.sdnotify import Notifier
from tests.rigs.processes import wait_until


def test_a_failing_body_is_restarted_with_backoff_and_counted() -> None:
    guards = Guards()
    stop = threading.Event()
    runs: list[int] = []
    seen: list[tuple[str, int, str]] = []
    guards.on_restart = lambda name, n, err: seen.append((name, n, err))

    def body() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise OSError(f"failure {len(runs)}")
        stop.wait()

    t = GuardedThread("worker", body, stop=stop, guards=guards, backoff=Backoff(0.01, 0.05))
    t.start()
    wait_until(lambda: len(runs) == 3, 5, what="the third run")
    assert t.restarts == 2 and guards.restarts() == {"worker": 2}
    assert seen == [("worker", 1, "OSError: failure 1"), ("worker", 2, "OSError: failure 2")]
    assert guards.dead() == []
    stop.set()
    t.join(5)
    assert not t.is_alive() and guards.dead() == []  # stopped as asked: not dead


def test_a_body_that_keeps_failing_or_returns_unasked_is_dead() -> None:
    guards = Guards()
    stop = threading.Event()

    def fails() -> None:
        raise RuntimeError("always")

    t = GuardedThread("hopeless", fails, stop=stop, guards=guards, give_up=3,
                      backoff=Backoff(0.01, 0.01))
    t.start()
    t.join(5)
    assert t.restarts == 3 and guards.dead() == ["hopeless"]

    ends = GuardedThread("ends", lambda: None, stop=stop, guards=guards, give_up=0)
    ends.start()
    ends.join(5)
    assert guards.dead() == ["ends", "hopeless"]


class _Console(BaseHTTPRequestHandler):
    """The console's ingest route, enough to ack what the link posts."""

    received: list[int]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seqs = [e["seq"] for e in body["events"]]
        self.server.received.extend(seqs)  # type: ignore[attr-defined]
        out = json.dumps({"acked": max(self.server.received)}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def console() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Console)
    server.received = []  # type: ignore[attr-defined]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


def _agent(tmp: Path, url: str = "", **env: str) -> Agent:
    policy = tmp / "policy.toml"
    policy.write_text('[floor]\nname = "3F"\n')
    config = load_config(None, env={"FLOORGUARD_CONFIG": "/dev/null",
                                    "FLOORGUARD_STATE_DIR": str(tmp / "state"),
                                    "FLOORGUARD_POLICY": str(policy),
                                    "FLOORGUARD_CONSOLE_URL": url,
                                    "FLOORGUARD_SEAT": "T-03", **env})
    return Agent(config)


def test_a_journal_read_that_raises_restarts_the_link_and_shipping_resumes(
        tmp_path: Path, console: Any) -> None:
    agent = _agent(tmp_path, f"http://127.0.0.1:{console.server_port}")
    agent.journal.open()
    agent.config.token_path.write_text("tok\n")
    failed: list[str] = []

    class LockedOnce(JournalReader):
        """The journal's reader, whose first read meets a locked database (as a
        checkpoint or a backup holding it would make it)."""

        def records(self, *args: Any, **kwargs: Any) -> Any:
            if not failed:
                failed.append("locked")
                raise sqlite3.OperationalError("database is locked")
            return super().records(*args, **kwargs)

    for i in range(5):
        agent.record("agent", "agent.command", "info", {"n": i}, user=None, wait=True)
    link = Link(agent.journal, agent.config, agent.state, reader=LockedOnce)
    agent.link = link
    link.start()
    try:
        wait_until(lambda: len(console.received) >= 5, 10, what="the first batch")
        assert failed == ["locked"]
        assert link._thread is not None and link._thread.restarts == 1
        assert agent.status()["thread_restarts"]["link"] >= 1  # what the heartbeat reports
        agent.record("agent", "agent.command", "info", {"n": 5}, user=None, wait=True)
        wait_until(lambda: 6 in console.received, 10, what="a record after the restart")
        assert link.acked() == 6
    finally:
        link.stop()
        agent.journal.close()


def test_a_dead_thread_that_must_live_stops_the_watchdog_keepalives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.1)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a keep-alive every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    agent = _agent(tmp_path)
    agent.notifier = Notifier(str(sock_path))
    agent.guards = guards = Guards()
    stop = threading.Event()
    fail = threading.Event()

    def must_live() -> None:
        fail.wait()
        raise RuntimeError("its collaborator failed for good")

    t = GuardedThread("scanner", must_live, stop=stop, guards=guards, give_up=0)
    t.start()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(agent.run()))
    runner.start()

    def messages(seconds: float) -> list[str]:
        out: list[str] = []
        for _ in range(int(seconds / 0.1)):
            with contextlib.suppress(TimeoutError):
                out.append(sock.recv(4096).decode())
        return out

    try:
        wait_until(lambda: "WATCHDOG=1" in messages(0.3), 10, what="keep-alives")
        fail.set()
        t.join(5)
        assert guards.dead() == ["scanner"]
        messages(0.2)  # one already on its way
        assert "WATCHDOG=1" not in messages(1.0)
    finally:
        agent.request_stop()
        runner.join(15)
        stop.set()
        sock.close()
    assert result == [0]


def test_a_dead_thread_its_owner_stopped_is_no_longer_missed() -> None:
    guards = Guards()
    stop = threading.Event()

    def fails() -> None:
        raise RuntimeError("always")

    t = GuardedThread("dropped", fails, stop=stop, guards=guards, give_up=0)
    t.start()
    wait_until(lambda: guards.dead() == ["dropped"], 5, what="the thread given up")
    stop.set()  # e.g. the policy no longer has the control
    t.join(5)
    assert guards.dead() == []


def test_a_periodic_scan_whose_interval_raises_is_restarted_and_scans_on() -> None:
    from floorguard.agent.guarded import GUARDS
    from floorguard.agent.periodic import Periodic

    scans: list[float] = []
    asked: list[int] = []

    def interval() -> float:
        asked.append(1)
        if len(asked) == 1:  # a policy swapped under the loop, half-applied
            raise AttributeError("'NoneType' object has no attribute 'check_interval'")
        return 0.01

    before = GUARDS.restarts().get("scan-under-test", 0)
    loop = Periodic("scan-under-test", lambda: scans.append(1), interval)
    loop.start()
    try:
        wait_until(lambda: len(scans) >= 5, 10, what="scans after the failure")
    finally:
        loop.stop()
    assert GUARDS.restarts()["scan-under-test"] == before + 1
