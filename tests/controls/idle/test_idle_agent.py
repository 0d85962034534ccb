"""The real agent process, its idle control on the dbusmock logind bus, with a real clock."""

from __future__ import annotations

import time
from pathlib import Path

from tests.rigs.agent import AgentProcess
from tests.rigs.logind import LogindMock
from tests.rigs.processes import floorguard
from tests.rigs.xvfb import Xserver

POLICY = """\
[idle]
warn_after = "1s"
lock_after = "2s"
verify_within = "1s"
retry_every = "1s"
"""


def agent_for(tmp_path: Path, logind_address: str, policy: str = POLICY) -> AgentProcess:
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    return AgentProcess(tmp_path / "agent", path, seat="T-12",
                        env={"DBUS_SYSTEM_BUS_ADDRESS": logind_address,
                             "FLOORGUARD_CONTROLS": "idle"})


def test_agent_warns_locks_and_records_the_unlock(tmp_path: Path,
                                                  logind: LogindMock) -> None:
    logind.add_session("c1", 1000, "alice", type="wayland")
    agent = agent_for(tmp_path, logind.address)
    try:
        agent.start()
        agent.wait_for("agent.started")
        logind.set_idle("c1", True, time.time())
        [warned] = agent.wait_for("idle.warned", source="logind")
        assert warned["user"] == "alice" and warned["seat"] == "T-12"
        [locked] = agent.wait_for("idle.locked", initiated="idle")
        assert locked["details"]["method"] == "LockSession"
        assert locked["details"]["idle_for"] >= 2.0
        assert logind.prop("c1", "LockedHint") is True
        logind.set_idle("c1", False)
        logind.set_locked("c1", False)
        [unlocked] = agent.wait_for("idle.unlocked")
        assert unlocked["details"]["locked_for"] > 0
        assert agent.stop() == 0
    finally:
        agent.stop()
    assert floorguard("verify", "--state-dir", str(agent.state_dir)).returncode == 0


def test_agent_keeps_reporting_a_lock_that_does_not_take(tmp_path: Path,
                                                         logind: LogindMock) -> None:
    logind.lock_takes(False)
    logind.add_session("c1", 1000, "alice", type="wayland")
    agent = agent_for(tmp_path, logind.address)
    try:
        agent.start()
        agent.wait_for("agent.started")
        logind.set_idle("c1", True, time.time())
        failed = agent.wait_for("idle.lock_failed", count=2)
        assert [f["details"]["attempt"] for f in failed[:2]] == [1, 2]
        assert {f["severity"] for f in failed} == {"violation"}
        logind.lock_takes(True)  # the screen locker is back
        logind.session_lock_takes("c1")
        [locked] = agent.wait_for("idle.locked")
        assert locked["details"]["attempts"] >= 3
        assert agent.stop() == 0
    finally:
        agent.stop()


def test_agent_without_logind_records_the_gap(tmp_path: Path) -> None:
    agent = agent_for(tmp_path, f"unix:path={tmp_path}/no-bus")
    try:
        agent.start()
        [gap] = agent.wait_for("agent.control_unavailable")
        assert gap["details"]["control"] == "idle"
        assert "idle lock needs logind" in gap["details"]["reason"]
        assert agent.stop() == 0
    finally:
        agent.stop()


def test_agent_trusts_x_when_the_idle_hint_is_stuck(tmp_path: Path, logind: LogindMock,
                                                   xvfb: Xserver) -> None:
    # The desktop never sets IdleHint; the X server sees no input on the display.
    logind.add_session("c1", 1000, "alice", type="x11", display=xvfb.display)
    agent = agent_for(tmp_path, logind.address, '[idle]\nlock_after = "1s"\n'
                      'stale_hint_after = "2s"\nnotify = false\n')
    try:
        agent.start()
        [stale] = agent.wait_for("idle.source_stale")
        assert stale["details"]["display"] == xvfb.display
        assert stale["details"]["x_idle_for"] >= 2.0
        [locked] = agent.wait_for("idle.locked")
        assert locked["details"]["source"] == "x11"
        assert agent.stop() == 0
    finally:
        agent.stop()
