"""The link end to end through real processes on loopback: a console under uvicorn, agents
as `floorguard agent` subprocesses, enrolled with `floorguard enroll`."""

from __future__ import annotations

import time
from pathlib import Path

from tests.live import LiveConsole, running, wait_until

from .conftest import Store, agent_id, csrf_of, enrolled_agent


def test_heartbeat_reports_state_and_reload_command_runs(
        tmp_path: Path, link_console: LiveConsole, store: Store, policy_file: Path) -> None:
    agent = enrolled_agent(tmp_path, link_console, policy_file).start()
    with running(agent):
        aid = agent_id(agent)
        row = wait_until(lambda: store.rows(
            "SELECT a.* FROM agents a JOIN agent_link l ON l.agent = a.id "
            "WHERE a.id = :id AND l.heartbeat_us IS NOT NULL", id=aid),
            20, 0.1, "a heartbeat")[0]
        assert row["version"]
        assert len(row["policy"]) == 64
        admin = link_console.login("admin1")
        page = admin.get("/agents")
        assert aid in page.text and "T-01" in page.text
        t0 = time.monotonic()
        resp = admin.post(f"/agents/{aid}/reload", data={"csrf": csrf_of(admin)})
        assert resp.status_code == 303
        done = wait_until(lambda: store.rows(
            "SELECT * FROM commands WHERE agent = :id AND state = 'done'", id=aid),
            10, 0.02, "the reload command's result")
        print(f"reload command round trip {time.monotonic() - t0:.3f}s")
        assert done[0]["name"] == "reload_policy"
        cmd = agent.wait_for("agent.command", name="reload_policy")[0]
        assert cmd["details"]["ok"] is True
        audit = store.rows("SELECT action FROM audit_log WHERE action LIKE 'command.%'")
        assert {"command.queued", "command.result"} <= {a["action"] for a in audit}
    # a deliberate stop: told to the console, never an agent.silent
    assert agent.proc is not None and agent.proc.returncode == 0
    wait_until(lambda: store.rows("SELECT * FROM agent_link WHERE agent = :id AND "
                                  "stopped_us IS NOT NULL", id=aid), 5, 0.1, "the stop")
    time.sleep(4)  # more than 3 heartbeat intervals
    assert store.console_events("agent.silent") == []
