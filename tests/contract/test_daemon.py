"""The agent daemon as systemd runs it: a real subprocess, real signals, a real
sd_notify datagram socket, its journal read back through the CLI."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from floorguard.agent.controls.base import Control, ControlUnavailable
from floorguard.agent.daemon import Agent
from floorguard.agent.periodic import BACKGROUND_NICE, Periodic
from floorguard.config import ConfigError, load_config
from floorguard.journal import JournalReader
from floorguard.policy import Policy
from tests.rigs.agent import AgentProcess
from tests.rigs.processes import floorguard, wait_until

POLICY_A = """[floor]
name = "3F north"
[agent]
heartbeat_interval = "30s"
"""
POLICY_B = POLICY_A.replace("3F north", "3F south")
BROKEN = """[floor]
name = "3F north"
max_operators_per_sv = "10"
[agent]
heartbeat_interval = "5x"
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_A)
    return path


@pytest.fixture
def agent(tmp_path: Path, policy_file: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path / "agent", policy_file)
    yield proc
    proc.stop()


def kinds(agent: AgentProcess) -> list[str]:
    return [e["kind"] for e in agent.events()]


def test_starts_records_its_policy_and_stops_cleanly(agent: AgentProcess) -> None:
    agent.start()
    loaded = agent.wait_for("agent.policy_loaded")[0]
    assert loaded["details"]["hash"] == sha(POLICY_A) == loaded["policy"]
    assert loaded["details"]["tables"] == ["agent", "floor"]
    assert agent.stop() == 0
    events = agent.events()
    assert [e["kind"] for e in events] == ["agent.started", "agent.policy_loaded",
                                           "agent.stopped"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    started = events[0]
    assert started["seat"] == "T-01" and started["control"] == "agent"
    assert started["details"]["pid"] == agent.proc.pid  # type: ignore[union-attr]
    assert events[2]["policy"] == sha(POLICY_A)
    res = floorguard("verify", "--state-dir", str(agent.state_dir))
    assert res.returncode == 0, res.stdout


def test_sighup_with_a_valid_policy_takes_over(agent: AgentProcess, policy_file: Path) -> None:
    agent.start()
    agent.wait_for("agent.policy_loaded")
    policy_file.write_text(POLICY_B)
    agent.signal(signal.SIGHUP)
    loaded = agent.wait_for("agent.policy_loaded", hash=sha(POLICY_B))[0]
    assert loaded["details"]["previous"] == sha(POLICY_A)
    assert agent.stop() == 0
    assert agent.events()[-1]["policy"] == sha(POLICY_B)
    saved = agent.state_dir / "policy.last-good.toml"
    assert saved.read_text() == POLICY_B and saved.stat().st_mode & 0o777 == 0o600


def test_sighup_with_a_broken_policy_keeps_the_old_one(agent: AgentProcess, policy_file: Path
                                                      ) -> None:
    agent.start()
    agent.wait_for("agent.policy_loaded")
    policy_file.write_text(BROKEN)
    agent.signal(signal.SIGHUP)
    rejected = agent.wait_for("agent.policy_rejected")[0]
    check = floorguard("check", str(policy_file))
    assert check.returncode == 2
    assert rejected["details"]["problems"] == check.stdout.splitlines()
    assert rejected["details"]["problems"] == [
        f"{policy_file}:3: floor.max_operators_per_sv: expected an integer, got a string "
        "(remove the quotes)",
        f'{policy_file}:5: agent.heartbeat_interval: bad duration "5x": write a number and a '
        'unit ms, s, m, h or d, e.g. "5m"']
    assert rejected["details"]["kept"] == sha(POLICY_A) == rejected["policy"]
    assert rejected["severity"] == "warning"
    # not UTF-8 at all: refused the same way, the agent keeps running
    policy_file.write_bytes(b"[floor]\nname = \"\xff\"\n")
    agent.signal(signal.SIGHUP)
    second = agent.wait_for("agent.policy_rejected", count=2)[1]
    assert second["details"]["problems"] == [f"{policy_file}:2: not UTF-8 text; save the "
                                             "file as UTF-8"]
    assert agent.stop() == 0
    events = agent.events()
    assert events[-1]["kind"] == "agent.stopped" and events[-1]["policy"] == sha(POLICY_A)
    assert kinds(agent).count("agent.policy_loaded") == 1
    assert (agent.state_dir / "policy.last-good.toml").read_text() == POLICY_A


def test_restart_with_a_broken_policy_runs_the_last_good_one(agent: AgentProcess,
                                                             policy_file: Path) -> None:
    agent.start()
    agent.wait_for("agent.policy_loaded")
    assert agent.stop() == 0
    policy_file.write_text(BROKEN)
    agent.start()
    loaded = agent.wait_for("agent.policy_loaded", count=2)[1]
    assert loaded["details"]["source"] == str(agent.state_dir / "policy.last-good.toml")
    assert loaded["details"]["hash"] == sha(POLICY_A)
    assert agent.stop() == 0
    second_run = agent.events()[3:]
    assert [e["kind"] for e in second_run] == ["agent.started", "agent.policy_rejected",
                                               "agent.policy_loaded", "agent.stopped"]
    assert second_run[1]["details"]["kept"] == sha(POLICY_A)
    assert {e["policy"] for e in second_run[1:]} == {sha(POLICY_A)}


def test_no_policy_and_no_last_good_one_still_runs_and_records_it(agent: AgentProcess,
                                                                  policy_file: Path) -> None:
    policy_file.unlink()
    agent.start()
    rejected = agent.wait_for("agent.policy_rejected")[0]
    assert rejected["details"]["kept"] is None
    assert rejected["details"]["problems"][0].startswith(f"{policy_file}:0: cannot read")
    assert agent.stop() == 0
    assert kinds(agent) == ["agent.started", "agent.policy_rejected", "agent.stopped"]


DEEP = (Path(__file__).parent.parent / "policies" / "bad" / "deep_nesting.toml").read_text()
DEEP_PROBLEM = ("6: brackets or braces nested more than 32 deep: close the arrays and inline "
                "tables opened on or before this line")


def test_sighup_with_5000_nested_brackets_keeps_the_old_policy(agent: AgentProcess,
                                                               policy_file: Path) -> None:
    agent.start()
    agent.wait_for("agent.policy_loaded")
    policy_file.write_text(DEEP)
    agent.signal(signal.SIGHUP)
    rejected = agent.wait_for("agent.policy_rejected")[0]
    assert rejected["details"]["problems"] == [f"{policy_file}:{DEEP_PROBLEM}"]
    assert rejected["details"]["kept"] == sha(POLICY_A) == rejected["policy"]
    assert agent.proc is not None and agent.proc.poll() is None  # still running
    # and still reloading: a good policy after the hostile one takes over
    policy_file.write_text(POLICY_B)
    agent.signal(signal.SIGHUP)
    agent.wait_for("agent.policy_loaded", hash=sha(POLICY_B))
    assert agent.stop() == 0
    assert "RecursionError" not in agent.log.read_text()
    assert kinds(agent) == ["agent.started", "agent.policy_loaded", "agent.policy_rejected",
                            "agent.policy_loaded", "agent.stopped"]


def test_restart_with_5000_nested_brackets_runs_the_last_good_one(agent: AgentProcess,
                                                                  policy_file: Path) -> None:
    agent.start()
    agent.wait_for("agent.policy_loaded")
    assert agent.stop() == 0
    policy_file.write_text(DEEP)
    agent.start()
    rejected = agent.wait_for("agent.policy_rejected")[0]
    assert rejected["details"]["problems"] == [f"{policy_file}:{DEEP_PROBLEM}"]
    loaded = agent.wait_for("agent.policy_loaded", count=2)[1]
    assert loaded["details"]["hash"] == sha(POLICY_A)
    assert agent.stop() == 0
    assert "Traceback" not in agent.log.read_text()


def test_sd_notify_ready_watchdog_reloading_stopping(tmp_path: Path, policy_file: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    agent = AgentProcess(tmp_path / "agent", policy_file,
                         env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"})
    got: list[str] = []

    def until(prefix: str) -> str:
        while True:
            msg = sock.recv(4096).decode()
            got.append(msg)
            if msg.startswith(prefix):
                return msg

    try:
        agent.start()
        ready = until("READY=1")
        assert f"MAINPID={agent.proc.pid}" in ready  # type: ignore[union-attr]
        assert "STATUS=enforcing" in ready
        until("WATCHDOG=1")
        until("WATCHDOG=1")
        agent.signal(signal.SIGHUP)
        until("RELOADING=1")
        until("READY=1")
        agent.signal(signal.SIGTERM)
        until("STOPPING=1")
        assert agent.proc.wait(15) == 0  # type: ignore[union-attr]
    finally:
        agent.stop()
        sock.close()
    assert got[0].startswith("READY=1"), got
    assert kinds(agent)[-1] == "agent.stopped"


def test_unknown_config_key_is_a_clear_error(tmp_path: Path, policy_file: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('consol_url = "https://console.example"\n')
    agent = AgentProcess(tmp_path / "agent", policy_file, env={"FLOORGUARD_CONFIG": str(cfg)})
    agent.start()
    assert agent.proc.wait(15) == 2  # type: ignore[union-attr]
    out = agent.log.read_text()
    assert f"{cfg}:1: unknown key 'consol_url'" in out and "console_url" in out
    assert not (agent.state_dir / "journal.db").exists()


def test_environment_overrides_the_config_file(tmp_path: Path, policy_file: Path) -> None:
    cfg = tmp_path / "agent.toml"
    other_state = tmp_path / "elsewhere"
    cfg.write_text(f'seat = "from-file"\nstate_dir = "{other_state}"\nlog_level = "debug"\n')
    agent = AgentProcess(tmp_path / "agent", policy_file,
                         env={"FLOORGUARD_CONFIG": str(cfg), "FLOORGUARD_SEAT": "T-42"})
    agent.start()
    try:
        started = agent.wait_for("agent.policy_loaded")[0]
    finally:
        assert agent.stop() == 0
    assert started["seat"] == "T-42"  # environment beats the file
    assert not other_state.exists()  # FLOORGUARD_STATE_DIR (from AgentProcess) beats it too
    assert agent.events()[0]["details"]["config"] == str(cfg)


def test_config_types_are_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cases = {
        'allow_insecure_http = "yes"\n': "'allow_insecure_http' has a value of the wrong type",
        "seat = 7\n": "'seat' has a value of the wrong type",
        'journal_max_mb = "512"\n': "'journal_max_mb' has a value of the wrong type",
        'log_level = "verbose"\n': "'log_level' must be one of debug, info, warning, error",
        'link_max_backoff = "soon"\n': "'link_max_backoff': bad duration \"soon\"",
        "seat = [\n": "not valid TOML",
    }
    for text, message in cases.items():
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(str(cfg), env={})
    cfg.write_text('link_max_backoff = "2s"\ncontrols = ["usb", "idle"]\n')
    config = load_config(str(cfg), env={"FLOORGUARD_ALLOW_INSECURE_HTTP": "yes",
                                        "FLOORGUARD_JOURNAL_MAX_MB": "64",
                                        "FLOORGUARD_CONTROLS": "usb, print"})
    assert (config.link_max_backoff, config.allow_insecure_http, config.journal_max_mb,
            config.controls) == (2.0, True, 64, ("usb", "print"))
    with pytest.raises(ConfigError, match="FLOORGUARD_JOURNAL_MAX_MB"):
        load_config(str(cfg), env={"FLOORGUARD_JOURNAL_MAX_MB": "lots"})
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "missing.toml"), env={})


# --- controls whose OS surface is missing ----------------------------------------------------
# The OS surface is what the test replaces here (no real control is registered in this
# checkout's CONTROLS yet); the agent code under test is the real one.


class NoSurface(Control):
    name = "usb"
    starts: ClassVar[int] = 0

    def start(self, policy: Policy) -> None:
        NoSurface.starts += 1
        raise ControlUnavailable("no /sys/bus/usb: USB authorization cannot be enforced")


class Crashes(Control):
    name = "idle"

    def start(self, policy: Policy) -> None:
        raise RuntimeError("logind said no")


class Works(Control):
    name = "print"
    check_interval = 0.05
    checks = 0
    nice: ClassVar[list[int]] = []

    def check(self) -> None:
        Works.checks += 1
        Works.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        if Works.checks == 1:
            raise OSError("a check that fails once must not stop the next ones")


def test_a_missing_surface_is_recorded_once_and_the_agent_runs_on(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[usb]\nblock = ["08:*:*"]\n[idle]\nlock_after = "5m"\n'
                      '[print]\napproval = "required"\n')
    config = load_config(None, env={"FLOORGUARD_CONFIG": "/dev/null",
                                    "FLOORGUARD_STATE_DIR": str(tmp_path / "state"),
                                    "FLOORGUARD_POLICY": str(policy),
                                    "FLOORGUARD_SEAT": "T-09"})
    agent = Agent(config, factories={"usb": NoSurface, "idle": Crashes, "print": Works})
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(agent.run()))
    thread.start()
    try:
        wait_until(lambda: Works.checks >= 3, 15, what="the working control's checks")
        agent.reload()  # the same policy again: the gaps are not recorded twice
        assert NoSurface.starts == 2
        # Checks keep the agent's priority (a USB worker restarted from one inherits it).
        assert max(Works.nice) < BACKGROUND_NICE
    finally:
        agent.request_stop()
        thread.join(15)
    assert result == [0]
    with JournalReader(tmp_path / "state") as r:
        events: list[dict[str, Any]] = list(r.records())
    gaps = [e for e in events if e["kind"] == "agent.control_unavailable"]
    assert [(g["details"]["control"], g["severity"]) for g in gaps] == [
        ("usb", "warning"), ("idle", "warning")]
    assert gaps[0]["details"]["reason"] == ("no /sys/bus/usb: USB authorization cannot be "
                                            "enforced")
    assert gaps[1]["details"]["reason"] == "failed to start: RuntimeError: logind said no"
    assert events[-1]["kind"] == "agent.stopped"
    assert agent.status()["unavailable"] == {
        "usb": "no /sys/bus/usb: USB authorization cannot be enforced",
        "idle": "failed to start: RuntimeError: logind said no"}


def test_a_real_control_without_its_surface_is_a_recorded_gap(tmp_path: Path) -> None:
    """The idle control with no system bus to reach logind on: recorded once, across a
    reload too, and the agent runs on."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[idle]\nlock_after = "5m"\n')
    agent = AgentProcess(tmp_path / "agent", policy, env={
        "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}"})
    agent.start()
    try:
        gap = agent.wait_for("agent.control_unavailable", control="idle")[0]
        assert gap["severity"] == "warning" and "logind" in gap["details"]["reason"]
        agent.signal(signal.SIGHUP)
        agent.wait_for("agent.policy_loaded", count=2)
    finally:
        assert agent.stop() == 0
    assert kinds(agent) == ["agent.started", "agent.policy_loaded",
                            "agent.control_unavailable", "agent.policy_loaded",
                            "agent.stopped"]


def test_periodic_scans_run_at_background_priority() -> None:
    seen: list[int] = []
    loop = Periodic("scan", lambda: seen.append(
        os.getpriority(os.PRIO_PROCESS, threading.get_native_id())), lambda: 0.01)
    loop.start()
    try:
        wait_until(lambda: len(seen) >= 2, 10, what="two scans")
    finally:
        loop.stop()
    assert set(seen) == {BACKGROUND_NICE}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < BACKGROUND_NICE


def _wait_ready(agent: AgentProcess) -> None:
    def ready() -> bool:
        assert agent.proc is not None and agent.proc.poll() is None, agent.log.read_text()
        return "agent ready" in agent.log.read_text()

    wait_until(ready, 30, 0.02, "agent ready")


def test_a_burst_of_signals_never_deadlocks_and_sigterm_still_exits_0(
        tmp_path: Path, policy_file: Path) -> None:
    import time

    agent = AgentProcess(tmp_path / "agent", policy_file)
    agent.start()
    try:
        _wait_ready(agent)
        for _ in range(50):
            agent.signal(signal.SIGHUP)
        agent.wait_for("agent.policy_loaded", count=2)  # the burst still reloads
        for _ in range(50):
            agent.signal(signal.SIGHUP)
        agent.signal(signal.SIGTERM)  # in the middle of reloads: stop wins
        t0 = time.monotonic()
        assert agent.proc.wait(20) == 0  # type: ignore[union-attr]
        took = time.monotonic() - t0
    finally:
        agent.stop()
    print(f"2 x 50 SIGHUP, then SIGTERM: exit 0 after {took:.2f}s")
    found = kinds(agent)
    assert found[-1] == "agent.stopped"
    # Reloads coalesce (one per wake-up of the main loop), and at least one ran.
    assert 2 <= found.count("agent.policy_loaded") <= 101


def test_repeated_start_and_sigterm_never_hangs(tmp_path: Path, policy_file: Path) -> None:
    import time

    agent = AgentProcess(tmp_path / "agent", policy_file)
    waits: list[float] = []
    try:
        for i in range(20):
            agent.start()
            _wait_ready(agent)
            for _ in range(i % 4):  # SIGHUPs racing the SIGTERM in some rounds
                agent.signal(signal.SIGHUP)
            agent.signal(signal.SIGTERM)
            t0 = time.monotonic()
            assert agent.proc.wait(20) == 0, agent.log.read_text()[-2000:]  # type: ignore[union-attr]
            waits.append(time.monotonic() - t0)
            agent.log.write_text("")  # the next round's "agent ready" is its own
    finally:
        agent.stop()
    print(f"20 start/SIGTERM rounds: all exit 0, slowest stop {max(waits):.2f}s")
    assert kinds(agent).count("agent.stopped") == 20


def test_request_stop_from_another_thread_ends_the_agent(tmp_path: Path,
                                                         policy_file: Path) -> None:
    config = load_config(None, env={"FLOORGUARD_CONFIG": "/dev/null",
                                    "FLOORGUARD_STATE_DIR": str(tmp_path / "state"),
                                    "FLOORGUARD_POLICY": str(policy_file)})
    agent = Agent(config)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(agent.run()))
    thread.start()
    agent.request_reload()
    agent.request_stop()
    thread.join(15)
    assert result == [0]
    agent.request_stop()  # after the end: a no-op, not a write to a closed pipe


def test_signal_handlers_take_no_lock_the_interrupted_main_thread_may_hold(
        tmp_path: Path, policy_file: Path) -> None:
    """The deadlock, made deterministic: a handler runs on the main thread at whatever
    point it was interrupted, e.g. inside ``Event.wait`` holding the Event's lock. Each
    installed handler is run while that lock is held; it must return at once."""
    assert threading.current_thread() is threading.main_thread()
    config = load_config(None, env={"FLOORGUARD_CONFIG": "/dev/null",
                                    "FLOORGUARD_STATE_DIR": str(tmp_path / "state"),
                                    "FLOORGUARD_POLICY": str(policy_file)})
    agent = Agent(config)
    before = signal.getsignal(signal.SIGTERM)
    returned: dict[str, bool] = {}

    def probe() -> None:
        wait_until(lambda: signal.getsignal(signal.SIGTERM) is not before, 15,
                   what="the agent's signal handlers")
        for sig in (signal.SIGHUP, signal.SIGTERM):
            handler = signal.getsignal(sig)
            assert callable(handler)
            # The stop Event's lock, as the main loop holds it inside Event.wait.
            with agent._stop._cond:  # type: ignore[attr-defined]
                t = threading.Thread(target=handler, args=(sig, None), daemon=True)
                t.start()
                t.join(1.0)
                returned[sig.name] = not t.is_alive()
            t.join(5)
        os.kill(os.getpid(), signal.SIGTERM)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        assert agent.run() == 0
    finally:
        prober.join(20)
    assert returned == {"SIGHUP": True, "SIGTERM": True}
    assert signal.getsignal(signal.SIGTERM) is before  # handed back at the end


def test_only_commands_of_the_contract_can_be_registered_or_queued() -> None:
    from floorguard.agent.controls.base import Commands
    from floorguard.console.commands import enqueue
    from floorguard.events import COMMANDS, Command

    assert {"print.decide", "idle.lock_seat", "agent.reload_policy"} == set(COMMANDS)
    registry = Commands()
    registry.register(Command.LOCK_SEAT, lambda args: {"ok": True})
    assert registry.run("idle.lock_seat", {}) == {"ok": True}
    with pytest.raises(ValueError, match="not a command"):
        registry.register("lock_seat", lambda args: {"ok": True})
    with pytest.raises(ValueError, match="not a command"):
        enqueue(None, "a1", "format_disk", {}, "sv1")  # type: ignore[arg-type]
