"""Agent subprocess -> live console: every journal record arrives exactly once, also when
the console was down for a while."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from floorguard.journal import JournalError, JournalReader
from tests.rigs.agent import AgentProcess
from tests.rigs.console import LiveConsole
from tests.rigs.processes import base_env, floorguard, free_port, wait_until

POLICY = '[floor]\nname = "3F north"\n[agent]\nheartbeat_interval = "30s"\n'


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """One live console for the module (each test has its own agent), with an auditor."""
    live = LiveConsole(tmp_path_factory.mktemp("console"))
    live.add_user("aud1", "auditor")
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def agent(console: LiveConsole, tmp_path: Path) -> Iterator[AgentProcess]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    proc = AgentProcess(tmp_path / "agent", policy, console_url=console.url, seat="T-07",
                        env={"FLOORGUARD_LINK_MAX_BACKOFF": "500ms"})
    res = proc.enroll(console.url, console.enroll_code())
    assert res.returncode == 0, res.stderr
    assert (proc.state_dir / "token").stat().st_mode & 0o777 == 0o600
    yield proc
    proc.stop()


def journal(agent: AgentProcess) -> tuple[list[tuple[int, str]], int]:
    """(seq, hash) of every journal record, and the seq the console acknowledged."""
    with JournalReader(agent.state_dir) as r:
        return [(x["seq"], x["hash"]) for x in r.records()], int(r.meta("acked_seq") or 0)


def store(console: LiveConsole) -> list[tuple[Any, ...]]:
    with sqlite3.connect(console.db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT agent, seq, hash, seat, kind FROM events "
                            "ORDER BY agent, seq").fetchall()


def agent_row(console: LiveConsole, agent_id: str) -> tuple[int, str]:
    with sqlite3.connect(console.db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT acked_seq, last_hash FROM agents WHERE id = ?",
                            (agent_id,)).fetchone()


def reload(agent: AgentProcess, times: int) -> None:
    """Make events from outside: each SIGHUP journals an agent.policy_loaded."""
    policy = agent.policy
    before = len(agent.wait_for("agent.policy_loaded"))
    for i in range(times):
        policy.write_text(POLICY.replace("3F north", f"3F north {i}"))
        agent.signal(signal.SIGHUP)
        agent.wait_for("agent.policy_loaded", count=before + i + 1)


def shipped(agent: AgentProcess, console: LiveConsole | None) -> list[tuple[int, str]]:
    def done() -> list[tuple[int, str]] | None:
        try:
            recs, acked = journal(agent)
        except JournalError:
            return None  # the agent has not created its journal yet
        return recs if recs and acked == recs[-1][0] else None

    recs: list[tuple[int, str]] = wait_until(done, 30, 0.1, "the link to ship everything")
    return recs


def assert_exactly_once(console: LiveConsole, agent_id: str, recs: list[tuple[int, str]]
                        ) -> None:
    rows = [r for r in store(console) if r[0] == agent_id]
    assert [(r[1], r[2]) for r in rows] == recs  # every seq once, same hash, nothing else
    assert {r[3] for r in rows} == {"T-07"}
    assert agent_row(console, agent_id) == (recs[-1][0], recs[-1][1])


def assert_page_shows(console: LiveConsole, agent_id: str, recs: list[tuple[int, str]]
                      ) -> None:
    client = console.login("aud1")
    try:
        resp = client.get("/events")
    finally:
        client.close()
    assert resp.status_code == 200
    seqs = [int(s) for s in re.findall(
        rf'data-agent="{agent_id}" data-seq="(\d+)"', resp.text)]
    assert sorted(seqs) == [s for s, _ in recs]
    assert "T-07" in resp.text and "agent.policy_loaded" in resp.text


def test_events_reach_the_console_exactly_once(console: LiveConsole,
                                               agent: AgentProcess) -> None:
    agent.start()
    reload(agent, 3)
    recs = shipped(agent, console)
    agent_id = agent.events()[0]["agent"]
    assert len(recs) == 5  # started, loaded, 3 x reloaded
    assert_exactly_once(console, agent_id, recs)
    assert_page_shows(console, agent_id, recs)
    # agent.stopped is shipped on the way out
    assert agent.stop() == 0
    recs, acked = journal(agent)
    assert acked == recs[-1][0] == 6
    assert [r for r in store(console) if r[0] == agent_id][-1][4] == "agent.stopped"
    assert_exactly_once(console, agent_id, recs)


def test_console_down_for_a_while_loses_and_duplicates_nothing(console: LiveConsole,
                                                               agent: AgentProcess) -> None:
    agent.start()
    first = shipped(agent, console)
    agent_id = agent.events()[0]["agent"]
    assert console.stop() == 0
    reload(agent, 4)  # the agent keeps journaling while the console is away
    recs, acked = journal(agent)
    assert acked == first[-1][0]
    assert len(recs) - acked == 4  # pending: exactly what was made while it was down
    assert agent.proc is not None and agent.proc.poll() is None
    console.start()  # same port, same database
    recs = shipped(agent, console)
    assert len(recs) == len(first) + 4
    assert_exactly_once(console, agent_id, recs)
    assert_page_shows(console, agent_id, recs)
    log = agent.log.read_text()
    assert "console unreachable; will retry" in log and '"pending": 4' in log


# --- over TLS ----------------------------------------------------------------------------


def make_ca_and_server_cert(d: Path) -> tuple[Path, Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is missing: apt-get install openssl"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=floorguard test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    run("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                               "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "srv.pem", d / "srv.key"


def test_the_link_speaks_tls_and_trusts_only_its_ca(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    db = f"sqlite:///{tmp_path}/tls.db"
    res = floorguard("console", "--db", db, "enroll-code")
    assert res.returncode == 0, res.stderr
    codes = [res.stdout.strip(), floorguard("console", "--db", db, "enroll-code").stdout.strip()]
    log = open(tmp_path / "console.log", "w")  # noqa: SIM115 closed with the process
    console = subprocess.Popen([sys.executable, "-m", "floorguard", "console", "--db", db,
                                "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert),
                                "--tls-key", str(key)], env=base_env(), stdout=log,
                               stderr=subprocess.STDOUT)
    log.close()
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    trusting = AgentProcess(tmp_path / "trusting", policy, console_url=url,
                            env={"FLOORGUARD_CA_FILE": str(ca)})
    # trusts the system store only, which does not hold the test CA: must not connect
    system = AgentProcess(tmp_path / "system", policy, console_url=url,
                          env={"FLOORGUARD_LINK_MAX_BACKOFF": "200ms"})
    try:
        def up() -> bool:
            assert console.poll() is None, (tmp_path / "console.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/healthz", timeout=1, verify=ssl.create_default_context(
                    cafile=str(ca))).is_success
            return False

        wait_until(up, 30, 0.1, "the TLS console")
        for agent, code in zip((trusting, system), codes, strict=True):
            res = floorguard("enroll", "--console", url, "--code", code, "--ca-file", str(ca),
                             env=agent.env)
            assert res.returncode == 0, res.stderr
            agent.start()
        recs = shipped(trusting, None)
        assert len(recs) == 2
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in system.log.read_text(), 30,
                   what="the untrusted console to be refused")
        recs, acked = journal(system)
        assert acked == 0 and len(recs) == 2  # still pending, nothing sent
    finally:
        trusting.stop()
        system.stop()
        console.send_signal(signal.SIGTERM)
        console.wait(20)
