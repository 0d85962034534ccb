"""Outages and crashes through real processes: the console down and back, the agent and
the console killed mid-transfer, TLS with a CA made here, and the journal's size cap."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from floorguard.journal import JournalReader
from tests.rigs.agent import AgentProcess
from tests.rigs.console import LiveConsole
from tests.rigs.processes import base_env, floorguard, running, wait_until

from .conftest import Store, agent_id
from .journal_fill import fill
from .test_live_link import all_arrived, assert_exactly_once
from .tls import make_ca, make_server_cert


def new_console(tmp_path: Path, **kw: object) -> LiveConsole:
    live = LiveConsole(tmp_path / "console", env={"FLOORGUARD_SILENCE_CHECK": "0.3"},
                       **kw)  # type: ignore[arg-type]
    live.workdir.mkdir(parents=True, exist_ok=True)
    return live


def stored_count(store: Store, aid: str) -> int:
    return int(store.rows("SELECT count(*) AS n FROM events WHERE agent = :a", a=aid)[0]["n"])


def test_console_down_then_up_everything_arrives_once(tmp_path: Path,
                                                      policy_file: Path) -> None:
    console = new_console(tmp_path).start()
    store = Store(console.db_url)
    agent = AgentProcess(tmp_path / "a", policy_file, console_url=console.url)
    with running(console, agent):
        assert agent.enroll(console.url, console.enroll_code()).returncode == 0
        aid = agent_id(agent)
        fill(agent.state_dir, 2000, every_warning=10)
        console.stop()
        agent.start()
        agent.wait_for("agent.started")
        time.sleep(1.5)  # the agent fails to reach the console and backs off
        assert "console unreachable" in agent.log.read_text()
        console.start()
        wait_until(lambda: all_arrived(store, agent), 30, 0.2, "the backlog to arrive")
        assert_exactly_once(store, agent)
        assert stored_count(store, aid) > 2000
    store.close()


def test_agent_killed_mid_batch_loses_and_duplicates_nothing(tmp_path: Path,
                                                             policy_file: Path) -> None:
    console = new_console(tmp_path).start()
    store = Store(console.db_url)
    agent = AgentProcess(tmp_path / "a", policy_file, console_url=console.url)
    with running(console, agent):
        assert agent.enroll(console.url, console.enroll_code()).returncode == 0
        aid = agent_id(agent)
        fill(agent.state_dir, 20000, pad=200)
        agent.start()
        wait_until(lambda: stored_count(store, aid) > 0, 30, 0.01, "the first batch")
        agent.signal(signal.SIGKILL)
        agent.proc.wait(5)  # type: ignore[union-attr]
        partial = stored_count(store, aid)
        assert 0 < partial < 20000, "the kill came after the whole journal had shipped"
        agent.start()
        wait_until(lambda: all_arrived(store, agent), 60, 0.2, "the rest to arrive")
        assert_exactly_once(store, agent)
    store.close()


def test_console_killed_mid_insert_loses_and_duplicates_nothing(tmp_path: Path,
                                                                policy_file: Path) -> None:
    console = new_console(tmp_path).start()
    store = Store(console.db_url)
    agent = AgentProcess(tmp_path / "a", policy_file, console_url=console.url)
    with running(console, agent):
        assert agent.enroll(console.url, console.enroll_code()).returncode == 0
        aid = agent_id(agent)
        fill(agent.state_dir, 20000, pad=200)
        agent.start()
        wait_until(lambda: stored_count(store, aid) > 0, 30, 0.01, "the first batch")
        console.kill()
        partial = stored_count(store, aid)
        assert 0 < partial < 20000, "the kill came after the whole journal had shipped"
        console.start()
        wait_until(lambda: all_arrived(store, agent), 60, 0.2, "the rest to arrive")
        assert_exactly_once(store, agent)
    store.close()


class TlsConsole(LiveConsole):
    """The console serving HTTPS with a certificate from the test CA."""

    def __init__(self, workdir: Path, cert: Path, key: Path, ca: Path):
        super().__init__(workdir, extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = ca

    def start(self, timeout: float = 30.0) -> LiveConsole:
        import ssl
        import subprocess
        import sys

        logf = open(self.log, "a")  # noqa: SIM115 closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "floorguard", "console", "--db", self.db_url,
             "--listen", f"127.0.0.1:{self.port}", *self.extra_args],
            env=base_env(self.env), stdout=logf, stderr=subprocess.STDOUT, text=True)
        logf.close()
        verify = ssl.create_default_context(cafile=str(self.ca))

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"console exited: {self.log.read_text()[-2000:]}")
            try:
                return httpx.get(self.url + "/healthz", verify=verify,
                                 timeout=1).status_code == 200
            except httpx.ConnectError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise
                return False

        wait_until(up, timeout, 0.05, "the HTTPS console to answer /healthz")
        return self


def test_tls_with_a_test_ca_and_a_wrong_ca_refused(tmp_path: Path, policy_file: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca, ca_key, ca_cert = make_ca(pki, "floor-ca")
    wrong, _k, _c = make_ca(pki, "other-ca")
    cert, key = make_server_cert(pki, ca_key, ca_cert)
    (tmp_path / "console").mkdir()
    console = TlsConsole(tmp_path / "console", cert, key, ca).start()
    store = Store(console.db_url)
    trusting = AgentProcess(tmp_path / "good", policy_file, console_url=console.url,
                            env={"FLOORGUARD_CA_FILE": str(ca)})
    doubting = AgentProcess(tmp_path / "bad", policy_file, console_url=console.url,
                            env={"FLOORGUARD_CA_FILE": str(wrong)})
    with running(console, trusting, doubting):
        res = doubting.enroll(console.url, console.enroll_code())
        assert res.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in res.stderr
        res = trusting.enroll(console.url, console.enroll_code())
        assert res.returncode == 0, res.stderr
        aid = agent_id(trusting)
        trusting.start()
        wait_until(lambda: store.rows("SELECT 1 FROM agent_link WHERE agent = :a AND "
                                      "heartbeat_us IS NOT NULL", a=aid),
                   20, 0.1, "a heartbeat over HTTPS")
        wait_until(lambda: all_arrived(store, trusting), 20, 0.1, "events over HTTPS")
        # An agent with a wrong CA (and a token) never talks to it
        import shutil

        doubting.state_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(trusting.state_dir / "token", doubting.state_dir / "token")
        doubting.start()
        doubting.wait_for("agent.started")
        time.sleep(1.5)
        assert "CERTIFICATE_VERIFY_FAILED" in doubting.log.read_text()
        assert store.rows("SELECT count(*) AS n FROM events WHERE agent = :a",
                          a=agent_id(doubting))[0]["n"] == 0
    # plain HTTP is refused to anything but loopback
    res = floorguard("enroll", "--console", "http://192.0.2.10:8080", "--code", "x" * 12,
                     env={"FLOORGUARD_STATE_DIR": str(tmp_path / "c")})
    assert res.returncode == 2 and "plain HTTP" in res.stderr
    store.close()


def test_buffer_cap_drops_info_first_and_the_console_accepts_the_documented_gap(
        tmp_path: Path, policy_file: Path) -> None:
    console = new_console(tmp_path).start()
    store = Store(console.db_url)
    agent = AgentProcess(tmp_path / "a", policy_file, console_url=console.url,
                         env={"FLOORGUARD_JOURNAL_MAX_MB": "1"})
    with running(console, agent):
        assert agent.enroll(console.url, console.enroll_code()).returncode == 0
        aid = agent_id(agent)
        stored = fill(agent.state_dir, 4000, every_warning=9, pad=500)
        warnings = {r["seq"] for r in stored if r["severity"] != "info"}
        console.stop()  # offline: nothing ships, the cap is reached
        agent.start()
        gap = agent.wait_for("agent.gap")[0]
        assert gap["severity"] == "warning"
        dropped = gap["details"]["dropped"]
        assert dropped > 0 and gap["details"]["severity_dropped"] == "info"
        verify = floorguard("verify", "--state-dir", str(agent.state_dir))
        assert verify.returncode == 0, verify.stdout
        with JournalReader(agent.state_dir) as reader:
            kept = {r["seq"] for r in reader.records()}
        assert warnings <= kept
        console.start()
        wait_until(lambda: store.rows("SELECT 1 FROM events WHERE agent = :a AND "
                                      "kind = 'agent.gap'", a=aid), 30, 0.2,
                   "the gap event to arrive")
        on_console = {r["seq"] for r in store.rows(
            "SELECT seq FROM events WHERE agent = :a", a=aid)}
        assert warnings <= on_console and kept <= on_console
        breaks = store.rows("SELECT * FROM chain_breaks WHERE agent = :a", a=aid)
        assert breaks and all(b["explained"] for b in breaks)
        assert sum(b["to_seq"] - b["from_seq"] + 1 for b in breaks) == dropped
        assert [e for e in store.console_events("agent.chain_broken")
                if e["details"]["agent"] == aid] == []
    store.close()
