"""Real processes for tests: the console under uvicorn and the agent, on private paths
and loopback ports, always stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a floorguard child process: this checkout's code first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOORGUARD_")}
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
    env["FLOORGUARD_CONFIG"] = "/dev/null"  # never read the machine's /etc/floorguard
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    if extra:
        env.update(extra)
    return env


def floorguard(*args: str, env: Mapping[str, str] | None = None, input: str | None = None,
               timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the floorguard CLI as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "floorguard", *args], env=base_env(env),
                          input=input, capture_output=True, text=True, timeout=timeout,
                          check=check)


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


class LiveConsole:
    """``floorguard console`` in a subprocess on 127.0.0.1 and a free port."""

    def __init__(self, workdir: Path, db_url: str | None = None, port: int | None = None,
                 extra_args: tuple[str, ...] = (), env: Mapping[str, str] | None = None):
        self.workdir = workdir
        self.db_url = db_url or f"sqlite:///{workdir}/console.db"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.env = dict(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.log = workdir / f"console-{self.port}.log"

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return floorguard("console", "--db", self.db_url, *args, input=input, env=self.env)

    def add_user(self, name: str, role: str, password: str = PASSWORD,
                 floors: tuple[str, ...] | None = None) -> None:
        """An account; an SV works on "3F north" (where ``enroll_code`` puts agents) unless
        ``floors`` says otherwise (SVs see and act on their floors only)."""
        if floors is None:
            floors = ("3F north",) if role == "sv" else ()
        res = self.cli("user", "add", name, "--role", role,
                       *(a for f in floors for a in ("--floor", f)), input=password + "\n")
        assert res.returncode == 0, res.stderr

    def enroll_code(self, floor: str = "3F north", expires: str = "1h") -> str:
        res = self.cli("enroll-code", "--floor", floor, "--expires", expires)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def start(self, timeout: float = 30.0) -> LiveConsole:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "a")  # noqa: SIM115 closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "floorguard", "console", "--db", self.db_url,
             "--listen", f"127.0.0.1:{self.port}", *self.extra_args],
            env=base_env(self.env), stdout=logf, stderr=subprocess.STDOUT, text=True)
        logf.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"console exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            return False

        wait_until(up, timeout, 0.05, "the console to answer /healthz")
        return self

    def stop(self) -> int:
        return stop_process(self.proc) if self.proc else 0

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def login(self, name: str, password: str = PASSWORD) -> httpx.Client:
        """A browser-like client signed in as ``name`` (cookie jar, CSRF token read back)."""
        client = httpx.Client(base_url=self.url, follow_redirects=False, timeout=10)
        resp = client.post("/login", data={"username": name, "password": password,
                                           "next": "/"})
        assert resp.status_code == 303, resp.text
        return client


class AgentProcess:
    """``floorguard agent`` in a subprocess with its own state dir and policy."""

    def __init__(self, workdir: Path, policy: Path | str, *, console_url: str = "",
                 seat: str = "T-01", env: Mapping[str, str] | None = None,
                 wrapper: tuple[str, ...] = ()):
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.policy = Path(policy)
        self.env = {
            "FLOORGUARD_STATE_DIR": str(self.state_dir),
            "FLOORGUARD_POLICY": str(self.policy),
            "FLOORGUARD_CONSOLE_URL": console_url,
            "FLOORGUARD_SEAT": seat,
            **(env or {}),
        }
        self.wrapper = wrapper
        self.proc: subprocess.Popen[str] | None = None
        self.log = workdir / "agent.log"

    def enroll(self, console_url: str, code: str) -> subprocess.CompletedProcess[str]:
        return floorguard("enroll", "--console", console_url, "--code", code, env=self.env)

    def start(self) -> AgentProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "a")  # noqa: SIM115 closed with the process
        self.proc = subprocess.Popen([*self.wrapper, sys.executable, "-m", "floorguard",
                                      "agent"], env=base_env(self.env), stdout=logf,
                                     stderr=subprocess.STDOUT, text=True)
        logf.close()
        return self

    def events(self) -> list[dict[str, Any]]:
        import json

        res = floorguard("events", "--json", "--state-dir", str(self.state_dir))
        if res.returncode != 0:
            return []
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def wait_for(self, kind: str, timeout: float = 15.0, count: int = 1,
                 **details: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: "
                                     f"{self.log.read_text()[-3000:]}")
            hits = [e for e in self.events() if e["kind"] == kind and all(
                e["details"].get(k) == v for k, v in details.items())]
            return hits if len(hits) >= count else []

        return list(wait_until(found, timeout, 0.1, f"{count} x {kind} {details}"))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self.proc, timeout) if self.proc else 0


@contextlib.contextmanager
def running(*things: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for t in reversed(things):
            with contextlib.suppress(Exception):
                t.stop()
