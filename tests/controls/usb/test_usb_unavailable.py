"""Without USB in sysfs the control says so and the agent goes on without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from floorguard.agent.controls.base import Commands, ControlContext, ControlUnavailable, Operator
from floorguard.agent.controls.usb.control import UsbControl
from floorguard.config import AgentConfig
from floorguard.policy import parse_policy


def test_missing_usb_sysfs_is_reported_as_unavailable(tmp_path: Path) -> None:
    config = AgentConfig(state_dir=str(tmp_path), sysfs_root=str(tmp_path / "sys"),
                         runtime_dir=str(tmp_path / "run"))
    recorded: list[object] = []
    ctx = ControlContext(config=config, record=lambda *a, **k: recorded.append(a),
                         commands=Commands(), operator=Operator())
    control = UsbControl(ctx)
    with pytest.raises(ControlUnavailable, match=r"sys/bus/usb does not exist"):
        control.start(parse_policy('[usb]\nblock = ["08:*:*"]\n'))
    assert not recorded
    assert not (tmp_path / "run" / "usb-agent.pid").exists()
