"""``floorguard console`` as a real process on 127.0.0.1 and a free port, with its
own SQLite (or given) store, accounts and enrollment codes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.rigs.processes import (
    PASSWORD,
    base_env,
    floorguard,
    free_port,
    stop_process,
    wait_until,
)


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
