"""Agent subprocess -> live console: every journal record arrives exactly once, also when
the console was down for a while."""

from __future__ import annotations

import re
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floorguard.journal import JournalReader
from tests.live import AgentProcess, LiveConsole, wait_until

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


def shipped(agent: AgentProcess, console: LiveConsole) -> list[tuple[int, str]]:
    def done() -> list[tuple[int, str]] | None:
        if not (agent.state_dir / "journal.db").exists():
            return None  # not started yet
        recs, acked = journal(agent)
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
