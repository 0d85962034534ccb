"""What the idle benchmarks share: a private system bus with dbusmock's logind and the
real agent process on it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.idle.conftest import LogindMock
from tests.live import AgentProcess


@contextlib.contextmanager
def logind_bus() -> Iterator[LogindMock]:
    from dbusmock.testcase import BusType, PrivateDBus, SpawnedMock

    saved = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    bus = PrivateDBus(BusType.SYSTEM)
    bus.start()
    mock = None
    try:
        server = SpawnedMock.spawn_with_template("logind", stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
        mock = LogindMock(bus.address, server)
        yield mock
    finally:
        if mock is not None:
            mock.stop()
        bus.stop()
        if saved is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = saved


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
