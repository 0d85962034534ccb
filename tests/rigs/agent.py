"""``floorguard agent`` as a real process with its own state dir and policy, and the
one way to wait for what it journals."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.rigs.processes import (
    base_env,
    floorguard,
    stop_process,
    wait_until,
)


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
