"""What the idle benchmarks share: a private system bus with dbusmock's logind (the same
one the idle tests use) and the real agent process on it."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.rigs.agent import AgentProcess
from tests.rigs.logind import running_logind as logind_bus

__all__ = ["idle_agent", "logind_bus"]


@contextlib.contextmanager
def idle_agent(address: str, policy: str) -> Iterator[AgentProcess]:
    with tempfile.TemporaryDirectory(prefix="fg-bench-") as tmp:
        path = Path(tmp) / "policy.toml"
        path.write_text(policy)
        agent = AgentProcess(Path(tmp) / "agent", path,
                             env={"DBUS_SYSTEM_BUS_ADDRESS": address,
                                  "FLOORGUARD_CONTROLS": "idle",
                                  "FLOORGUARD_LOG_LEVEL": "info"})
        try:
            agent.start()
            agent.wait_for("agent.started", timeout=30)
            yield agent
        finally:
            agent.stop()
