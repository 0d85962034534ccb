"""The USB control inside the real ``floorguard agent`` process: restart with devices in
use, and a SIGHUP policy reload changing a verdict."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.rigs.agent import AgentProcess
from tests.rigs.usb_devices import DEVICES, FLASH_DRIVE, HEADSET, umockdev_text

from .conftest import SYS, attr, wait_until

pytestmark = pytest.mark.umockdev

POLICY = """
[usb]
mode = "enforce"
allow = ["03:*:*", "09:*:*", "01:*:*"]
block = ["08:*:*", "06:*:*", "02:*:*", "0a:*:*", "e0:*:*", "ef:04:*", "ff:*:*"]
default = "block"
"""
STICK_RULE = f"""
[[usb.device]]
id = "0781:5567:{FLASH_DRIVE.serial}"
verdict = "allow"
note = "the SV's approved stick"
"""


def _mtimes(root: str, paths: list[str]) -> dict[str, int]:
    return {p: os.stat(f"{root}{p}/authorized").st_mtime_ns for p in paths}


def _agent(tmp_path: Path, tb: Any, policy: Path, run_dir: Path) -> AgentProcess:
    return AgentProcess(tmp_path / "agent", policy, env={
        "UMOCKDEV_DIR": tb.get_root_dir(),  # the preload finds the mock through it
        "FLOORGUARD_RUNTIME_DIR": str(run_dir),
        "FLOORGUARD_CONTROLS": "usb",
    })


def test_restart_keeps_devices_in_use_and_sighup_changes_a_verdict(
        testbed: Any, tmp_path: Path, run_dir: Path) -> None:
    testbed.add_from_string(umockdev_text(HEADSET, "1-1", devnum=3))
    testbed.add_from_string(umockdev_text(FLASH_DRIVE, "1-2", devnum=4))
    testbed.add_from_string(umockdev_text(DEVICES["android_mtp"], "1-3", devnum=5))
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + STICK_RULE)
    root = testbed.get_root_dir()
    head, stick, phone = f"{SYS}/1-1", f"{SYS}/1-2", f"{SYS}/1-3"

    first = _agent(tmp_path, testbed, policy, run_dir).start()
    try:
        first.wait_for("usb.allowed", port="1-1")
        first.wait_for("usb.allowed", port="1-2", rule=f"usb.device[0781:5567:"
                                                       f"{FLASH_DRIVE.serial}]")
        first.wait_for("usb.blocked", port="1-3")
        assert (attr(head), attr(stick), attr(phone)) == ("1", "1", "0")
        assert attr(f"{stick}/1-2:1.0") == "1" and attr(f"{head}/1-1:1.3") == "1"
        assert attr(SYS, "authorized_default") == "0"
        wait_until(lambda: (run_dir / "usb-agent.pid").exists(), what="the pid file")
    finally:
        assert first.stop() == 0
    assert not (run_dir / "usb-agent.pid").exists()
    assert attr(SYS, "authorized_default") == "0", "stopping never relaxes the default"

    # The headset is in a call and the stick is mounted: a restart must not touch them.
    in_use = [head, stick, f"{head}/1-1:1.1", f"{stick}/1-2:1.0"]
    before = _mtimes(root, in_use)
    second = _agent(tmp_path, testbed, policy, run_dir).start()
    try:
        second.wait_for("usb.allowed", count=2, port="1-2")
        assert _mtimes(root, in_use) == before
        assert (attr(head), attr(stick)) == ("1", "1")

        policy.write_text(POLICY)  # the stick is no longer approved
        second.signal(signal.SIGHUP)
        (blocked,) = second.wait_for("usb.blocked", port="1-2")
        assert blocked["details"]["previous"]["verdict"] == "allowed"
        assert blocked["details"]["rule"] == "usb.block[08:*:*]"
        assert attr(stick) == "0" and attr(f"{stick}/1-2:1.0") == "0"
        assert attr(head) == "1"
        assert _mtimes(root, [head])[head] == before[head], "the headset is left alone"
    finally:
        assert second.stop() == 0
