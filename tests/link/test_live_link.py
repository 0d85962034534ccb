"""The link end to end through real processes on loopback: a console under uvicorn, agents
as ``floorguard agent`` subprocesses enrolled with ``floorguard enroll``."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from floorguard.journal import JournalReader
from tests.rigs.agent import AgentProcess
from tests.rigs.console import LiveConsole
from tests.rigs.processes import floorguard, running, wait_until

from .conftest import POLICY, Store, agent_id, csrf_of, enrolled_agent, token
from .journal_fill import fill


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveConsole, Store]]:
    """One console for the tests that do not stop it (each makes its own agents)."""
    work = tmp_path_factory.mktemp("shared-console")
    live = LiveConsole(work, env={"FLOORGUARD_SILENCE_CHECK": "0.3"})
    for name, role in (("admin1", "admin"), ("sv1", "sv"), ("aud1", "auditor")):
        live.add_user(name, role)
    live.start()
    store = Store(live.db_url)
    try:
        yield live, store
    finally:
        store.close()
        live.stop()


def heartbeat_seen(store: Store, aid: str) -> bool:
    return bool(store.rows("SELECT 1 FROM agent_link WHERE agent = :id AND heartbeat_us "
                           "IS NOT NULL", id=aid))


def all_arrived(store: Store, agent: AgentProcess) -> bool:
    with JournalReader(agent.state_dir) as reader:
        last = reader.last_seq()
    rows = store.rows("SELECT count(*) AS n, max(seq) AS top FROM events WHERE agent = :a",
                      a=agent_id(agent))[0]
    return bool(rows["n"] == last and rows["top"] == last)


def assert_exactly_once(store: Store, agent: AgentProcess) -> None:
    aid = agent_id(agent)
    with JournalReader(agent.state_dir) as reader:
        local = {r["seq"]: r["hash"] for r in reader.records()}
    stored = store.rows("SELECT seq, hash FROM events WHERE agent = :a ORDER BY seq", a=aid)
    assert [r["seq"] for r in stored] == sorted(local)
    assert all(local[r["seq"]] == r["hash"] for r in stored)
    assert [e for e in store.console_events("agent.chain_broken")
            if e["details"]["agent"] == aid] == []


def test_heartbeat_reports_state_and_a_reload_command_runs(
        tmp_path: Path, shared: tuple[LiveConsole, Store], policy_file: Path) -> None:
    console, store = shared
    agent = enrolled_agent(tmp_path, console, policy_file).start()
    with running(agent):
        aid = agent_id(agent)
        wait_until(lambda: heartbeat_seen(store, aid), 20, 0.05, "a heartbeat")
        row = store.rows("SELECT * FROM agents WHERE id = :id", id=aid)[0]
        assert row["version"] and len(row["policy"]) == 64
        admin = console.login("admin1")
        assert aid in admin.get("/agents").text
        t0 = time.monotonic()
        resp = admin.post(f"/agents/{aid}/reload", data={"csrf": csrf_of(admin)})
        assert resp.status_code == 303
        done = wait_until(lambda: store.rows(
            "SELECT * FROM commands WHERE agent = :id AND state = 'done'", id=aid),
            10, 0.01, "the reload command's result")
        print(f"\nreload command round trip through the long-poll: "
              f"{time.monotonic() - t0:.3f} s")
        assert done[0]["name"] == "agent.reload_policy"
        cmd = agent.wait_for("agent.command", name="agent.reload_policy")[0]
        assert cmd["details"]["ok"] is True
        actions = {a["action"] for a in store.rows("SELECT action FROM audit_log")}
        assert {"command.queued", "command.result"} <= actions


def test_sv_lock_button_reaches_the_agent_and_roles_are_enforced(
        tmp_path: Path, shared: tuple[LiveConsole, Store], policy_file: Path) -> None:
    console, store = shared
    agent = enrolled_agent(tmp_path, console, policy_file, seat="T-02").start()
    with running(agent):
        aid = agent_id(agent)
        wait_until(lambda: heartbeat_seen(store, aid), 20, 0.05, "a heartbeat")
        sv = console.login("sv1")
        csrf = csrf_of(sv)
        assert sv.post(f"/agents/{aid}/lock", data={}).status_code == 403  # no CSRF
        assert sv.post(f"/agents/{aid}/reload", data={"csrf": csrf}).status_code == 403
        assert sv.post(f"/agents/{aid}/revoke", data={"csrf": csrf}).status_code == 403
        aud = console.login("aud1")
        assert "Lock this seat now" not in aud.get("/agents").text
        assert aud.post(f"/agents/{aid}/lock",
                        data={"csrf": csrf_of(aud)}).status_code == 403
        t0 = time.monotonic()
        assert sv.post(f"/agents/{aid}/lock", data={"csrf": csrf}).status_code == 303
        # No control on this agent registers lock_seat: the agent answers so, and the
        # answer is the recorded result.
        row = wait_until(lambda: store.rows(
            "SELECT * FROM commands WHERE agent = :id AND name = 'idle.lock_seat' AND "
            "state IN ('done', 'failed')", id=aid), 10, 0.01, "the lock result")[0]
        print(f"\nlock_seat round trip: {time.monotonic() - t0:.3f} s")
        assert row["state"] == "failed" and "idle.lock_seat" in row["result"]
        ev = agent.wait_for("agent.command", name="idle.lock_seat")[0]
        assert ev["severity"] == "warning" and ev["details"]["ok"] is False
        assert ev["details"]["args"]["by"] == "sv1"


def test_one_agents_credential_never_speaks_for_another(
        tmp_path: Path, shared: tuple[LiveConsole, Store], policy_file: Path) -> None:
    console, store = shared
    a = enrolled_agent(tmp_path, console, policy_file, name="a", seat="T-03")
    b = enrolled_agent(tmp_path, console, policy_file, name="b", seat="T-04")
    b_events = fill(b.state_dir, 3)
    b_id = agent_id(b)
    auth_a = {"Authorization": f"Bearer {token(a)}"}
    with httpx.Client(base_url=console.url, timeout=10) as http:
        resp = http.post("/api/v1/events", json={"events": b_events}, headers=auth_a)
        assert resp.status_code == 403 and "another agent" in resp.text
        resp = http.post("/api/v1/heartbeat", json={"agent": b_id, "status": {}},
                         headers=auth_a)
        assert resp.status_code == 403
        admin = console.login("admin1")
        admin.post(f"/agents/{b_id}/reload", data={"csrf": csrf_of(admin)})
        cmd = store.rows("SELECT id FROM commands WHERE agent = :b", b=b_id)[0]["id"]
        resp = http.post(f"/api/v1/commands/{cmd}/result", json={"result": {"ok": True}},
                         headers=auth_a)
        assert resp.status_code == 404
        assert http.get("/api/v1/commands", headers=auth_a).json() == {"commands": []}
    assert store.rows("SELECT state FROM commands WHERE id = :c", c=cmd)[0]["state"] == \
        "queued"
    assert store.rows("SELECT count(*) AS n FROM events WHERE agent = :b", b=b_id)[0]["n"] == 0


def test_a_revoked_credential_is_refused_at_once(
        tmp_path: Path, shared: tuple[LiveConsole, Store], policy_file: Path) -> None:
    console, _store = shared
    a = enrolled_agent(tmp_path, console, policy_file, name="a", seat="T-05")
    b = enrolled_agent(tmp_path, console, policy_file, name="b", seat="T-06")
    with httpx.Client(base_url=console.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {token(a)}"}
        assert http.post("/api/v1/heartbeat", json={}, headers=auth).status_code == 200
        res = console.cli("agent", "revoke", agent_id(a))
        assert res.returncode == 0, res.stderr
        # revoked by another process (the CLI): the console sees it within its store
        # poll (a quarter second), whatever it had cached
        wait_until(lambda: http.post("/api/v1/heartbeat", json={},
                                     headers=auth).status_code == 401,
                   2, 0.05, "the revoked token to be refused")
        resp = http.post("/api/v1/events", json={"events": fill(a.state_dir, 1)},
                         headers=auth)
        assert resp.status_code == 401
        # from the admin page, for an agent holding a long-poll open: the poll ends
        auth_b = {"Authorization": f"Bearer {token(b)}"}
        admin = console.login("admin1")
        import threading

        answer: list[int] = []
        poll = threading.Thread(target=lambda: answer.append(http.get(
            "/api/v1/commands", params={"wait": 20}, headers=auth_b).status_code))
        poll.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        assert admin.post(f"/agents/{agent_id(b)}/revoke",
                          data={"csrf": csrf_of(admin)}).status_code == 303
        poll.join(10)
        assert answer == [401] and time.monotonic() - t0 < 5
    res = console.cli("agent", "revoke", "no-such-agent")
    assert res.returncode == 1 and "no agent" in res.stderr


def test_enrollment_codes_expire_and_work_once(
        tmp_path: Path, shared: tuple[LiveConsole, Store], policy_file: Path) -> None:
    import sqlalchemy as sa

    from floorguard.console.cli import create_enrollment_code

    console, store = shared
    engine = sa.create_engine(console.db_url)
    try:
        expired = create_enrollment_code(engine, "test", "3F north", -1.0)
    finally:
        engine.dispose()
    agent = AgentProcess(tmp_path / "x", policy_file, console_url=console.url)
    res = agent.enroll(console.url, expired)
    assert res.returncode == 1 and "expired" in res.stderr
    assert not (agent.state_dir / "token").exists()
    # from the admin page: shown once, good once
    admin = console.login("admin1")
    page = admin.post("/agents/enroll-code", data={"csrf": csrf_of(admin),
                                                   "floor": "3F north", "expires": "1h"})
    import re

    code = re.search(r'class="enroll-code">([^<]+)<', page.text)
    assert code, page.text
    assert agent.enroll(console.url, code.group(1)).returncode == 0
    token_file = agent.state_dir / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    other = AgentProcess(tmp_path / "y", policy_file, console_url=console.url)
    assert other.enroll(console.url, code.group(1)).returncode == 1
    sv = console.login("sv1")
    assert sv.post("/agents/enroll-code", data={"csrf": csrf_of(sv)}).status_code == 403
    hashes = store.rows("SELECT token_hash FROM agents WHERE id = :id", id=agent_id(agent))
    assert hashes[0]["token_hash"] != token_file.read_text().strip()


def test_central_policy_valid_is_applied_and_invalid_is_refused(
        tmp_path: Path, shared: tuple[LiveConsole, Store], policy_file: Path) -> None:
    console, store = shared
    admin = console.login("admin1")
    bad = POLICY + '\n[usb]\nmode = "enforce"\nallow = ["08:zz:*"]\n'
    page = admin.post("/policies", data={"csrf": csrf_of(admin, "/policies"),
                                         "floor": "3F north"},
                      files={"file": ("3F.toml", bad.encode(), "text/plain")})
    assert page.status_code == 422
    assert "3F.toml:9: usb.allow: bad USB interface pattern" in page.text
    check = tmp_path / "3F.toml"
    check.write_text(bad)
    cli = floorguard("check", str(check))
    assert cli.returncode == 2
    assert cli.stdout.strip().replace(str(check), "3F.toml") in page.text.replace("&#34;", '"')
    assert store.rows("SELECT * FROM floor_policies") == []

    good = POLICY.replace('"1s"', '"2s"')
    agent = enrolled_agent(tmp_path, console, policy_file, seat="T-08").start()
    with running(agent):
        aid = agent_id(agent)
        wait_until(lambda: heartbeat_seen(store, aid), 20, 0.05, "a heartbeat")
        page = admin.post("/policies", data={"csrf": csrf_of(admin, "/policies"),
                                             "floor": "3F north", "text": good})
        assert page.status_code == 200, page.text
        held = store.rows("SELECT hash FROM floor_policies")[0]["hash"]
        loaded = agent.wait_for("agent.policy_loaded", source="console:3F north")[0]
        assert loaded["details"]["hash"] == held
        wait_until(lambda: store.rows("SELECT 1 FROM agents WHERE id = :id AND policy = :h",
                                      id=aid, h=held), 10, 0.05, "the hash in force")
        # A floor policy this agent's parser refuses (as from another version) is refused
        # like a local reload: recorded, and the last good one stays in force.
        store.engine.dispose()
        with sqlite3.connect(console.db_url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE floor_policies SET text = ?, hash = ?",
                       (bad, __import__("hashlib").sha256(bad.encode()).hexdigest()))
        rejected = agent.wait_for("agent.policy_rejected", source="console:3F north")[0]
        assert any(":9: usb.allow" in p for p in rejected["details"]["problems"])
        assert rejected["details"]["kept"] == held
        time.sleep(2.5)  # heartbeats go on; the refusal is not repeated
        assert len(agent.wait_for("agent.policy_rejected")) == 1
        assert store.rows("SELECT policy FROM agents WHERE id = :id", id=aid)[0]["policy"] \
            == held


def test_an_altered_journal_record_is_flagged_chain_broken(
        tmp_path: Path, shared: tuple[LiveConsole, Store], policy_file: Path) -> None:
    console, store = shared
    agent = enrolled_agent(tmp_path, console, policy_file, seat="T-09")
    fill(agent.state_dir, 40)
    with sqlite3.connect(agent.state_dir / "journal.db") as db:
        (text,) = db.execute("SELECT record FROM journal WHERE seq = 17").fetchone()
        db.execute("UPDATE journal SET record = ? WHERE seq = 17",
                   (text.replace('"user":"alice"', '"user":"mallory"'),))
    agent.start()
    with running(agent):
        aid = agent_id(agent)
        wait_until(lambda: all_arrived(store, agent), 20, 0.1, "the journal to arrive")
        flags = [e for e in store.console_events("agent.chain_broken")
                 if e["details"]["agent"] == aid]
        assert [(f["details"]["from_seq"], f["details"]["to_seq"], f["details"]["reason"])
                for f in flags] == [(17, 17, "altered")]
        assert flags[0]["severity"] == "violation" and flags[0]["seat"] == "T-09"
        # the console keeps what it was sent, the altered record included
        assert store.rows("SELECT user FROM events WHERE agent = :a AND seq = 17",
                          a=aid)[0]["user"] == "mallory"

        # a replayed batch: stored once, acknowledged the same, flagged no further
        batch = [r for r in agent.events() if r["seq"] <= 30]
        with httpx.Client(base_url=console.url, timeout=10) as http:
            resp = http.post("/api/v1/events", json={"events": batch},
                             headers={"Authorization": f"Bearer {token(agent)}"})
        assert resp.status_code == 200 and resp.json()["stored"] == 0
        assert resp.json()["acked"] >= 40
        assert len([e for e in store.console_events("agent.chain_broken")
                    if e["details"]["agent"] == aid]) == 1


def test_a_pulled_cable_is_silent_and_its_return_recovered(
        tmp_path: Path, shared: tuple[LiveConsole, Store], policy_file: Path) -> None:
    console, store = shared
    agent = enrolled_agent(tmp_path, console, policy_file, seat="T-10").start()
    aid = agent_id(agent)
    with running(agent):
        wait_until(lambda: heartbeat_seen(store, aid), 20, 0.05, "a heartbeat")
        agent.signal(signal.SIGKILL)
        agent.proc.wait(5)  # type: ignore[union-attr]

    def silent() -> list[dict[str, object]]:
        return [e for e in store.console_events("agent.silent")
                if e["details"]["agent"] == aid]

    flagged = wait_until(silent, 10, 0.1, "agent.silent")
    assert flagged[0]["severity"] == "violation" and flagged[0]["seat"] == "T-10"
    agent.start()
    with running(agent):
        wait_until(lambda: [e for e in store.console_events("agent.recovered")
                            if e["details"]["agent"] == aid], 20, 0.1, "agent.recovered")
    assert len(silent()) == 1
    # and a deliberate stop (clean SIGTERM above) is told apart: no second silence
    wait_until(lambda: store.rows("SELECT 1 FROM agent_link WHERE agent = :id AND "
                                  "stopped_us IS NOT NULL", id=aid), 5, 0.1, "the stop")
    assert "agent.stopping" in {a["action"] for a in store.rows(
        "SELECT action FROM audit_log WHERE actor = :a", a="agent:" + aid)}
    time.sleep(3.5)  # more than three 1 s heartbeat intervals, checked every 0.3 s
    assert len(silent()) == 1
