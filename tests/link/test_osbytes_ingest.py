"""Escaped OS bytes through the link and ingest of a live console, and a record the console
refuses costing none of its neighbours."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from floorguard.agent.identity import agent_id as make_agent_id
from floorguard.journal import Journal, JournalReader
from floorguard.osbytes import unescape
from tests.rigs.console import LiveConsole
from tests.rigs.processes import PASSWORD, running, wait_until

from .conftest import Store, agent_id, enrolled_agent


def _fill(state_dir: Path, kinds: list[str], odd_at: int | None = None) -> None:
    aid = make_agent_id(state_dir)
    with Journal(state_dir) as journal:
        tickets = []
        for i, kind in enumerate(kinds):
            details: dict[str, object] = {"n": i}
            user = "alice"
            if i == odd_at:  # what os/psutil hand over for bytes that are not UTF-8
                details["path"] = os.fsdecode(b"/media/u/STICK/cust-\xff\xfe.txt")
                details[os.fsdecode(b"k\xe9y")] = ["\\", "tab\there"]
                user = os.fsdecode(b"op\xe9rateur")
            tickets.append(journal.append({
                "agent": aid, "host": "pc-test", "seat": "T-01", "user": user,
                "control": "files", "kind": kind, "severity": "info", "policy": "",
                "details": details}))
        for t in tickets:
            t.wait(30)


def _arrived(store: Store, aid: str, upto: int) -> bool:
    rows = store.rows("SELECT acked_seq FROM agents WHERE id = :a", a=aid)
    return bool(rows) and int(rows[0]["acked_seq"]) >= upto


def test_a_batch_with_escaped_os_bytes_is_stored_whole_by_a_live_console(
        tmp_path: Path, link_console: LiveConsole, store: Store, policy_file: Path) -> None:
    agent = enrolled_agent(tmp_path, link_console, policy_file)
    _fill(agent.state_dir, ["files.flagged"] * 41, odd_at=20)
    agent.start()
    with running(agent):
        aid = agent_id(agent)
        wait_until(lambda: _arrived(store, aid, 41), 30, 0.1, "the batch to be acknowledged")
        stored = {e["seq"]: e for e in store.events(aid)}
        assert all(s in stored for s in range(1, 42))
        odd = stored[21]
        assert odd["details"]["path"] == "/media/u/STICK/cust-\\xff\\xfe.txt"
        assert unescape(odd["details"]["path"]) == b"/media/u/STICK/cust-\xff\xfe.txt"
        assert odd["details"]["k\\xe9y"] == ["\\\\", "tab\\x09here"]
        assert odd["user"] == "op\\xe9rateur"
        assert [e for e in store.console_events("agent.chain_broken")
                if e["details"]["agent"] == aid] == []
        with JournalReader(agent.state_dir) as r:
            assert r.verify() == (None, "intact")
        # and the pages show it
        with httpx.Client(base_url=link_console.url, timeout=10) as web:
            web.post("/login", data={"username": "aud1", "password": PASSWORD, "next": "/"})
            page = web.get("/events", params={"agent": aid})
            assert page.status_code == 200
            assert "op\\xe9rateur" in page.text  # the user column, escaped as stored


def test_a_record_the_console_refuses_costs_no_neighbour_and_never_stalls_the_link(
        tmp_path: Path, link_console: LiveConsole, store: Store, policy_file: Path) -> None:
    """A journal record from a newer agent (a kind this console does not know) is refused
    with a 422 naming it. The 40 around it still arrive, the console flags the one hole,
    and what the agent writes afterwards arrives too."""
    agent = enrolled_agent(tmp_path, link_console, policy_file)
    kinds = ["files.flagged"] * 41
    kinds[20] = "files.from_a_newer_agent"
    _fill(agent.state_dir, kinds)
    agent.start()
    with running(agent):
        aid = agent_id(agent)
        agent.wait_for("agent.started")
        with JournalReader(agent.state_dir) as r:
            started = max(e["seq"] for e in r.records() if e["kind"] == "agent.started")
        wait_until(lambda: _arrived(store, aid, started), 30, 0.1,
                   "the link to move past the refused record")
        stored = {e["seq"] for e in store.events(aid)}
        assert set(range(1, 42)) - stored == {21}
        assert started in stored
        flags = [(e["details"]["from_seq"], e["details"]["to_seq"], e["details"]["reason"])
                 for e in store.console_events("agent.chain_broken")
                 if e["details"]["agent"] == aid]
        assert flags == [(21, 21, "missing")]
        # the agent says so too: in its log, and in its heartbeat
        assert "the console refuses a journal record" in agent.log.read_text()
        def refused_in_heartbeat() -> bool:
            status = store.rows("SELECT status FROM agents WHERE id = :a", a=aid)[0]["status"]
            status = json.loads(status) if isinstance(status, str) else status or {}
            return "21" in status.get("link_refused", {})

        wait_until(refused_in_heartbeat, 10, 0.1, "the heartbeat to list the refused record")
        with JournalReader(agent.state_dir) as r:  # the record itself stays at the agent
            assert [e["kind"] for e in r.records() if e["seq"] == 21] == [kinds[20]]


_examples = st.lists(st.binary(max_size=24), min_size=1, max_size=6)


def test_arbitrary_os_bytes_go_through_journal_link_and_ingest_unchanged(
        tmp_path: Path, link_console: LiveConsole, store: Store) -> None:
    """Hypothesis feeds arbitrary bytes (as os hands them over) into events; each batch
    is shipped by the link's own ``ship`` to the live console, which must store every
    record with the same hash and the same escaped strings, the bytes recoverable."""
    from floorguard.agent.link.shipper import Link, make_client
    from floorguard.config import AgentConfig

    state = tmp_path / "state"
    aid = make_agent_id(state)
    resp = httpx.post(f"{link_console.url}/api/v1/enroll", timeout=10, json={
        "code": link_console.enroll_code(), "agent_id": aid, "host": "pc-x", "seat": "T-01"})
    assert resp.status_code == 200, resp.text
    tok = resp.json()["token"]

    with Journal(state) as journal:
        link = Link(journal, AgentConfig(state_dir=str(state), console_url=link_console.url),
                    {})
        client = make_client(link.config)

        @settings(max_examples=30, deadline=None)
        @given(_examples)
        def ship_one(raws: list[bytes]) -> None:
            recs = [journal.record({
                "agent": aid, "host": "pc-x", "seat": "T-01", "user": os.fsdecode(raw),
                "control": "files", "kind": "files.flagged", "severity": "info",
                "policy": "", "details": {"path": os.fsdecode(raw),
                                          os.fsdecode(b"k" + raw): [raw]}})
                for raw in raws]
            acked = link.ship(client, tok, recs)
            assert acked == recs[-1]["seq"]
            journal.set_meta("acked_seq", str(acked))
            held = {e["seq"]: e for e in store.events(aid)}
            for raw, rec in zip(raws, recs, strict=True):
                got = held[rec["seq"]]
                assert got["hash"] == rec["hash"]
                assert unescape(got["details"]["path"]) == raw
                assert unescape(got["user"]) == raw
                assert got["details"] == rec["details"]

        try:
            ship_one()
        finally:
            client.close()
    with JournalReader(state) as r:
        assert r.verify() == (None, "intact")
    assert [e for e in store.console_events("agent.chain_broken")
            if e["details"]["agent"] == aid] == []


def test_a_record_stamped_beyond_the_clock_skew_bound_costs_no_neighbour(
        tmp_path: Path, link_console: LiveConsole, store: Store, policy_file: Path) -> None:
    """A PC whose clock jumped to 9999 for one record: the console refuses that record
    (422 naming events[i].ts), every other record arrives, and the hole is flagged."""
    agent = enrolled_agent(tmp_path, link_console, policy_file)
    aid = make_agent_id(agent.state_dir)
    now = [time.time()]
    with Journal(agent.state_dir, clock=lambda: now[0]) as journal:
        tickets = []
        for i in range(41):
            now[0] = 253_402_297_000.0 if i == 20 else time.time()  # 9999-12-31
            tickets.append(journal.append({
                "agent": aid, "host": "pc-test", "seat": "T-01", "user": "alice",
                "control": "files", "kind": "files.flagged", "severity": "info",
                "policy": "", "details": {"n": i}}))
        for t in tickets:
            t.wait(30)
    agent.start()
    with running(agent):
        agent.wait_for("agent.started")
        with JournalReader(agent.state_dir) as r:
            started = max(e["seq"] for e in r.records() if e["kind"] == "agent.started")
        wait_until(lambda: _arrived(store, aid, started), 30, 0.1,
                   "the link to move past the record from the future")
        stored = {e["seq"] for e in store.events(aid)}
        assert set(range(1, 42)) - stored == {21}
        flags = [(e["details"]["from_seq"], e["details"]["to_seq"], e["details"]["reason"])
                 for e in store.console_events("agent.chain_broken")
                 if e["details"]["agent"] == aid]
        assert flags == [(21, 21, "missing")]
