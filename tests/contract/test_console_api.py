"""POST /api/v1/events against a live console: every bad request gets the right status,
names the problem, and leaves the store exactly as it was."""

from __future__ import annotations

import copy
import json
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from floorguard.journal import Journal
from tests.rigs.console import LiveConsole

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """One live console for the module; each test enrolls agents of its own."""
    live = LiveConsole(tmp_path_factory.mktemp("console"))
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def codes(console: LiveConsole) -> Iterator[Iterator[str]]:
    """Enrollment codes, made by the console's own code on its store (quicker than one
    CLI process per code)."""
    from floorguard.console.cli import create_enrollment_code
    from floorguard.console.store.db import open_store

    engine = open_store(console.db_url)
    try:
        yield (create_enrollment_code(engine, "cli:test", "3F", 600) for _ in iter(int, 1))
    finally:
        engine.dispose()


class Enrolled:
    def __init__(self, console: LiveConsole, tmp: Path, codes: Iterator[str]):
        self.console = console
        self.id = str(uuid.uuid4())
        resp = httpx.post(console.url + "/api/v1/enroll", json={
            "code": next(codes), "agent_id": self.id, "host": "pc-17",
            "seat": "T-01"}, timeout=10)
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["token"]
        self.state = tmp / self.id

    def records(self, n: int) -> list[dict[str, Any]]:
        """n real journal records of this agent (seq 1..n, chained)."""
        with Journal(self.state, group_window=0.01) as j:
            tickets = [j.append({"agent": self.id, "host": "pc-17", "seat": "T-01",
                                 "user": "alice", "control": "usb", "kind": "usb.blocked",
                                 "severity": "violation", "policy": "ab" * 32,
                                 "details": {"n": i}}) for i in range(n)]
            return [t.wait() for t in tickets]

    def post(self, body: Any, bearer: str | None = "mine", **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if bearer is not None:
            headers["Authorization"] = f"Bearer {self.token if bearer == 'mine' else bearer}"
        if not isinstance(body, (bytes, str)) and "content" not in kw:
            kw["content"] = json.dumps(body)
            headers["Content-Type"] = "application/json"
        elif "content" not in kw:
            kw["content"] = body
        return httpx.post(self.console.url + "/api/v1/events", headers=headers, timeout=30,
                          **kw)


def snapshot(console: LiveConsole) -> tuple[list[Any], list[Any]]:
    path = console.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        events = conn.execute("SELECT agent, seq, hash, received_us FROM events "
                              "ORDER BY agent, seq").fetchall()
        agents = conn.execute("SELECT id, acked_seq, last_hash FROM agents ORDER BY id") \
            .fetchall()
    return events, agents


@pytest.fixture
def agent(console: LiveConsole, tmp_path: Path, codes: Iterator[str]) -> Iterator[Enrolled]:
    yield Enrolled(console, tmp_path, codes)


@pytest.fixture
def stored(console: LiveConsole, agent: Enrolled) -> Iterator[list[dict[str, Any]]]:
    """Five records already stored, so 'unchanged' means more than 'still empty'."""
    recs = agent.records(8)
    resp = agent.post({"events": recs[:5]})
    assert resp.status_code == 200 and resp.json() == {"acked": 5, "stored": 5}
    yield recs


def raw_request(url: str, head: str) -> tuple[int, bytes]:
    """Send only the request head (a large body announced, none sent) and read the answer:
    a server that tried to read the body first would never answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("auth", [None, "Bearer " + "x" * 43, "Basic dXNlcjpwYXNz", "Bearer"])
def test_no_or_wrong_token_is_401_before_the_body_is_read(
        console: LiveConsole, agent: Enrolled, stored: list[dict[str, Any]],
        auth: str | None) -> None:
    before = snapshot(console)
    head = ("POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000000\r\n")
    if auth:
        head += f"Authorization: {auth}\r\n"
    status, data = raw_request(console.url, head + "\r\n")
    assert status == 401, data
    assert b"www-authenticate: bearer" in data.lower()
    # the same with a real body
    resp = agent.post({"events": stored[5:]}, bearer=None if auth is None else auth.split()[-1],
                      headers={} if auth is None or auth.startswith("Bearer ")
                      else {"Authorization": auth})
    assert resp.status_code == 401
    assert snapshot(console) == before


def test_a_revoked_token_is_401(console: LiveConsole, agent: Enrolled,
                                stored: list[dict[str, Any]]) -> None:
    before = snapshot(console)
    path = console.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE agents SET revoked_us = 1 WHERE id = ?", (agent.id,))
    resp = agent.post({"events": stored[5:]})
    assert resp.status_code == 401 and "enroll the agent again" in resp.json()["detail"]
    assert snapshot(console)[0] == before[0]


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"events": [', b"\xff\xfe",
                                  b""])
def test_malformed_json_is_422_naming_the_problem(console: LiveConsole, agent: Enrolled,
                                                  stored: list[dict[str, Any]],
                                                  body: bytes) -> None:
    before = snapshot(console)
    resp = agent.post(body)
    assert resp.status_code == 422
    assert resp.json()["detail"].startswith("body is not valid JSON")
    assert snapshot(console) == before


def mutate(records: list[dict[str, Any]], i: int, **change: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(records)
    for k, v in change.items():
        if v is KeyError:
            del out[i][k]
        else:
            out[i][k] = v
    return out


@pytest.mark.parametrize(("index", "change", "loc", "kind"), [
    (0, {"seq": "6"}, ["events", 0, "seq"], "int_type"),
    (1, {"seq": 0}, ["events", 1, "seq"], "greater_than_equal"),
    (0, {"colour": "red"}, ["events", 0, "colour"], "extra_forbidden"),
    (2, {"severity": "fatal"}, ["events", 2, "severity"], "literal_error"),
    (0, {"hash": "ab" * 31}, ["events", 0, "hash"], "string_pattern_mismatch"),
    (1, {"prev": "AB" * 32}, ["events", 1, "prev"], "string_pattern_mismatch"),
    (0, {"ts": "yesterday"}, ["events", 0, "ts"], "string_pattern_mismatch"),
    (0, {"details": "none"}, ["events", 0, "details"], "dict_type"),
    (0, {"control": "webcam"}, ["events", 0, "control"], "literal_error"),
    (2, {"kind": "usb.exploded"}, ["events", 2, "kind"], "unknown_kind"),
    (0, {"user": 5}, ["events", 0, "user"], "string_type"),
    (1, {"id": KeyError}, ["events", 1, "id"], "missing"),
])
def test_wrong_types_are_422_naming_the_field(console: LiveConsole, agent: Enrolled,
                                              stored: list[dict[str, Any]], index: int,
                                              change: dict[str, Any], loc: list[Any],
                                              kind: str) -> None:
    before = snapshot(console)
    resp = agent.post({"events": mutate(stored[5:], index, **change)})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert [d["loc"] for d in detail] == [loc] and detail[0]["type"] == kind
    assert snapshot(console) == before


def test_wrong_envelope_is_422(console: LiveConsole, agent: Enrolled,
                               stored: list[dict[str, Any]]) -> None:
    before = snapshot(console)
    for body, loc in (([], []), ({"events": []}, ["events"]), ({"evts": stored}, ["events"]),
                      ({"events": stored, "more": 1}, ["more"])):
        resp = agent.post(body)
        assert resp.status_code == 422, body
        assert loc in [d["loc"] for d in resp.json()["detail"]] or loc == []
    assert snapshot(console) == before


def test_oversized_body_is_413(console: LiveConsole, agent: Enrolled,
                               stored: list[dict[str, Any]]) -> None:
    before = snapshot(console)
    big = json.dumps({"events": stored[5:], "pad": "x" * (8 * MiB)}).encode()
    resp = agent.post(big, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and "limit" in resp.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b'{"events": [], "pad": "'
        for _ in range(9):
            yield b"x" * MiB
        yield b'"}'

    resp = agent.post(b"", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert snapshot(console) == before


def test_batch_over_1000_is_422(console: LiveConsole, agent: Enrolled,
                                stored: list[dict[str, Any]]) -> None:
    before = snapshot(console)
    many = agent.records(1001)  # seq 9..1009 of the same agent
    resp = agent.post({"events": many})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["events"]
    assert resp.json()["detail"][0]["type"] == "too_long"
    assert snapshot(console) == before


def test_duplicate_seq_in_a_batch_is_422(console: LiveConsole, agent: Enrolled,
                                         stored: list[dict[str, Any]]) -> None:
    before = snapshot(console)
    resp = agent.post({"events": [stored[5], stored[6], stored[5]]})
    assert resp.status_code == 422
    assert resp.json()["detail"] == [{"loc": ["events", 2, "seq"],
                                      "msg": "seq 6 appears twice in the batch",
                                      "type": "duplicate"}]
    assert snapshot(console) == before


def test_an_event_naming_another_agent_is_403(console: LiveConsole, agent: Enrolled,
                                              stored: list[dict[str, Any]], tmp_path: Path,
                                              codes: Iterator[str]) -> None:
    other = Enrolled(console, tmp_path, codes)
    before = snapshot(console)
    resp = other.post({"events": stored[5:]})  # agent's records, other's token
    assert resp.status_code == 403 and agent.id in resp.json()["detail"]
    assert snapshot(console) == before


def test_replaying_a_batch_stores_nothing_new(console: LiveConsole, agent: Enrolled,
                                              stored: list[dict[str, Any]]) -> None:
    before = snapshot(console)
    resp = agent.post({"events": stored[:5]})
    assert resp.status_code == 200 and resp.json() == {"acked": 5, "stored": 0}
    assert snapshot(console)[0] == before[0]
    # a batch overlapping what is stored stores only the new part, exactly once
    resp = agent.post({"events": stored[3:]})
    assert resp.json() == {"acked": 8, "stored": 3}
    events, agents = snapshot(console)
    assert [(e[1], e[2]) for e in events if e[0] == agent.id] == [
        (r["seq"], r["hash"]) for r in stored]
    assert (agent.id, 8, stored[-1]["hash"]) in agents


def test_a_gap_holds_the_acknowledgement_back(console: LiveConsole, agent: Enrolled,
                                              stored: list[dict[str, Any]]) -> None:
    resp = agent.post({"events": stored[6:]})  # seq 7, 8: seq 6 missing
    assert resp.json() == {"acked": 5, "stored": 2}
    resp = agent.post({"events": stored[5:6]})
    assert resp.json() == {"acked": 8, "stored": 1}


def test_openapi_documents_the_agent_api(console: LiveConsole) -> None:
    doc = httpx.get(console.url + "/openapi.json", timeout=10).json()
    schemas = doc["components"]["schemas"]
    for path, model in (("/api/v1/events", "EventBatch"), ("/api/v1/enroll", "EnrollIn")):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert schemas["EventBatch"]["properties"]["events"]["maxItems"] == 1000
    assert set(schemas["EventIn"]["required"]) >= {"id", "seq", "ts", "agent", "seat", "kind",
                                                   "severity", "policy", "prev", "hash"}
    refs = {r.rsplit("/", 1)[1] for r in _refs(doc)}
    assert refs <= set(schemas), f"dangling: {refs - set(schemas)}"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)
