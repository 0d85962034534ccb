"""Shared pieces for the leak-control tests: the real controls in-process over a real
journal, unique forbidden programs, and private namespaces for mounts and interfaces."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from floorguard.agent.controls.base import Control, ControlContext
from floorguard.agent.daemon import Agent
from floorguard.config import AgentConfig
from floorguard.journal import JournalReader
from floorguard.policy import parse_policy
from tests.rigs.processes import need, wait_until


class Harness:
    """An agent's journal and context in this process, for driving one control for real."""

    def __init__(self, tmp: Path):
        self.state = tmp / "state"
        self.agent = Agent(AgentConfig(state_dir=str(self.state), seat="T-07"))
        self.agent.journal.open()
        self.agent.agent_id = "test-agent"
        self.agent.operator.set("op1", "test")
        self.controls: list[Control] = []

    @property
    def ctx(self) -> ControlContext:
        return self.agent.ctx

    def start(self, factory: Callable[[ControlContext], Control], policy: str) -> Any:
        pol = parse_policy(policy, "test.toml")
        self.agent.policy = pol
        control = factory(self.ctx)
        control.start(pol)
        self.controls.append(control)
        return control

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with JournalReader(self.state) as r:
            return [e for e in r.records() if kind is None or e["kind"] == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0,
                 **details: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            hits = [e for e in self.events(kind)
                    if all(e["details"].get(k) == v for k, v in details.items())]
            return hits if len(hits) >= count else []

        return list(wait_until(found, timeout, 0.02, f"{count} x {kind} {details}"))

    def close(self) -> None:
        for c in reversed(self.controls):
            c.stop()
        self.agent.journal.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def unique_program(folder: Path, name: str, source: str = "/bin/sleep") -> Path:
    """A copy of ``source`` with random bytes appended after the ELF image, so that its name
    and its SHA-256 match nothing else on the machine: a test's forbid rule must never
    touch another process."""
    path = folder / name
    shutil.copyfile(source, path)
    with open(path, "ab") as f:
        f.write(secrets.token_bytes(64))
    os.chmod(path, 0o755)  # noqa: S103 - run by an unprivileged test user too
    return path




def ns_run(pid: int, flag: str, *cmd: str, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    """Run a command in the namespace (``-m`` mount, ``-n`` network) of process ``pid``."""
    need("nsenter", "util-linux")
    return subprocess.run(["nsenter", "-t", str(pid), flag, *cmd], capture_output=True,
                          text=True, timeout=30, check=check)
