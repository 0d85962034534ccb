"""Hostile values against a live console on both stores: every integer parameter of every
route, event records with impossible or far-future times, NaN, lone surrogates and deep
nesting, stored rows no calendar holds, and bodies over the size limit. Nothing may give
a 5xx; every 422 names the field."""

from __future__ import annotations

import json
import math
import socket
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floorguard.console.api.limits import FORM_LIMIT, check_event_ts, json_problem
from floorguard.console.app import create_app
from floorguard.console.ingest.seats import fold
from floorguard.console.store.schema import events, seat_state
from floorguard.events import record_hash, rfc3339
from tests.console.kit import Seat, Site, unique

HUGE = (2**63, 2**64 + 1, -(2**63) - 1, 10**30)


def route_params() -> list[tuple[str, str, str, str, str]]:
    """(method, path, where, name, annotation) for every path, query or form parameter
    of every route the app serves, pages and API alike (found from the app, not a
    list)."""
    def flat(dep: Any) -> Any:
        yield dep
        for sub in dep.dependencies:
            yield from flat(sub)

    app = create_app("sqlite://")
    found = []
    for included in app.routes:
        routes = getattr(getattr(included, "original_router", None), "routes", [included])
        for route in routes:
            if not isinstance(route, APIRoute):
                continue
            deps = list(flat(route.dependant))
            for where, attr in (("path", "path_params"), ("query", "query_params"),
                                ("form", "body_params")):
                for p in (p for d in deps for p in getattr(d, attr)):
                    for method in sorted((route.methods or set()) - {"HEAD"}):
                        found.append((method, route.path, where, p.name,
                                      str(p.field_info.annotation)))
    return found


ROUTE_PARAMS = route_params()
INT_PARAMS = [(m, path, w, n) for m, path, w, n, ann in ROUTE_PARAMS
              if "int" in ann and "str" not in ann]


def test_the_sweep_finds_the_integer_parameters() -> None:
    names = {(path, name) for _m, path, _w, name in INT_PARAMS}
    # The routes the probe reported with a 500 for 2^63, each found by the sweep.
    for expected in (("/violations/{agent}/{seq}", "seq"), ("/audit", "before"),
                     ("/seats/{agent_id}", "before"), ("/reports/archive/{rid}", "rid"),
                     ("/api/v1/commands/{command_id}/result", "command_id"),
                     ("/print/thumbnail/{agent_id}/{job_id}", "job_id"),
                     ("/print/{agent_id}/{job_id}/approve", "job_id"),
                     ("/api/v1/print/jobs/{agent_id}/{job_id}/decision", "job_id"),
                     ("/events", "limit"), ("/api/v1/print/jobs", "limit")):
        assert expected in names, sorted(names)


def _clients(site: Site, seat: Seat) -> list[httpx.Client]:
    agent = httpx.Client(base_url=site.url, timeout=10,
                         headers={"Authorization": f"Bearer {seat.token}"})
    out = [agent]
    for name in ("admin1", "sv1", "aud1"):
        c = site.login(name)
        c.headers["X-CSRF-Token"] = site.csrf(c)
        out.append(c)
    return out


def test_every_integer_parameter_out_of_range_is_a_422_naming_it(site: Site) -> None:
    seat = site.seat("HX", unique("H"))
    clients = _clients(site, seat)
    for method, path, where, name in INT_PARAMS:
        for value in HUGE:
            url = path
            for seg in ("agent", "agent_id"):
                url = url.replace("{" + seg + "}", seat.agent_id)
            params: dict[str, Any] = {}
            data: dict[str, Any] | None = None
            if where == "path":
                url = url.replace("{" + name + "}", str(value))
            elif where == "query":
                params[name] = str(value)
            else:
                data = {name: str(value)}
            for other in ("seq", "job_id", "rid", "command_id"):
                url = url.replace("{" + other + "}", "1")
            got = []
            for client in clients:
                csrf = client.headers.get("X-CSRF-Token")
                body = {**(data or {}), **({"csrf": csrf} if csrf else {})}
                if method == "GET":
                    resp = client.get(url, params=params)
                elif "/api/" in url and data is None:
                    resp = client.request(method, url, params=params,
                                          json={"result": {}, "decision": "approve"})
                else:
                    resp = client.request(method, url, params=params, data=body)
                assert resp.status_code < 500, (method, url, value, resp.text[:300])
                got.append(resp)
            named = [r for r in got if r.status_code == 422 and name in r.text]
            assert named, (method, url, where, name, value,
                           [(r.status_code, r.text[:120]) for r in got])


HOSTILE_TEXT = ("a\x00b", "\udcff", "2026-13-01", "9999-12-31", "9" * 30, "x" * 5000,
                "NaN", "-1", "../../etc/passwd", "' OR 1=1 --")


def _request(client: httpx.Client, method: str, path: str, where: str, name: str,
             value: str, agent_id: str) -> httpx.Response:
    url = path
    if where == "path":
        url = url.replace("{" + name + "}", quote(value, safe="", errors="surrogateescape"))
    for seg in ("agent", "agent_id"):
        url = url.replace("{" + seg + "}", agent_id)
    for other in ("seq", "job_id", "rid", "command_id"):
        url = url.replace("{" + other + "}", "1")
    csrf = client.headers.get("X-CSRF-Token")
    raw = value.encode("utf-8", "surrogateescape")  # \udcff: the lone byte 0xff
    params = {name: raw} if where == "query" else {}
    query = urlencode(params)
    target = url + ("?" + query if query else "")
    if method == "GET":
        return client.get(target)
    form: dict[str, Any] = {"csrf": csrf or ""}
    if where == "form":
        form[name] = raw
    body = urlencode(form).encode()
    if "/api/" in url:
        return client.request(method, target, json={"result": {}, "decision": "approve"})
    return client.request(method, target, content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded"})


def test_every_parameter_of_every_route_survives_hostile_text(site: Site) -> None:
    seat = site.seat("HX", unique("S"))
    clients = _clients(site, seat)
    for method, path, where, name, _ann in ROUTE_PARAMS:
        for value in HOSTILE_TEXT:
            for client in clients:
                resp = _request(client, method, path, where, name, value, seat.agent_id)
                assert resp.status_code < 500, (method, path, name, value[:20],
                                                resp.text[:300])
                if where == "query" and "\x00" in value and resp.status_code == 422:
                    assert name in resp.text, resp.text


JSON_HOSTILE = ('[' * 5000 + ']' * 5000, '{"a": NaN}', '{"a": "\\ud800"}', '{"a": "\\u0000"}',
                '{"a": 9223372036854775808}', '{"result": {"ok": Infinity}}', "[]", "null",
                '"' + "x" * 70000 + '"', '{"\\ud800": 1, "decision": "deny"}')


def test_every_json_body_in_the_openapi_schema_survives_hostile_documents(site: Site) -> None:
    seat = site.seat("HX", unique("J"))
    schema = httpx.get(site.url + "/openapi.json", timeout=10).json()
    # Every route that takes a body: those documenting a JSON body, and the agent API's
    # POSTs that read theirs by hand after the token check.
    routes = [(m.upper(), p) for p, ops in schema["paths"].items() for m, op in ops.items()
              if "application/json" in op.get("requestBody", {}).get("content", {})
              or (m == "post" and p.startswith("/api/"))]
    assert ("POST", "/api/v1/events") in routes and ("POST", "/api/v1/heartbeat") in routes
    for client in _clients(site, seat):
        for method, path in routes:
            url = path.replace("{agent_id}", seat.agent_id)
            for p in ("{job_id}", "{command_id}"):
                url = url.replace(p, "1")
            for doc in JSON_HOSTILE:
                resp = client.request(method, url, content=doc, headers={
                    "Content-Type": "application/json"})
                assert resp.status_code < 500, (method, url, doc[:40], resp.text[:300])


def _raw_post(seat: Seat, body: bytes) -> httpx.Response:
    return httpx.post(seat.url + "/api/v1/events", content=body, timeout=10, headers={
        "Authorization": f"Bearer {seat.token}", "Content-Type": "application/json"})


def _fresh(seat: Seat, **fields: Any) -> dict[str, Any]:
    seq, prev = seat.seq, seat.prev
    rec = seat.record("files.copied", "violation")
    seat.seq, seat.prev = seq, prev  # sent on its own: the chain moves only if stored
    rec.update(fields)
    rec["hash"] = record_hash({k: v for k, v in rec.items() if k != "hash"})
    return rec


@pytest.mark.parametrize(("field", "value", "msg"), [
    ("ts", "9999-12-31T23:00:00Z", "ahead"),
    ("ts", "2026-13-01T00:00:00Z", "not a real date"),
    ("ts", "2026-02-30T00:00:00Z", "not a real date"),
    ("ts", "1999-12-31T23:59:59Z", "before 2000"),
    ("seq", 2**63, "less than or equal"),
])
def test_event_fields_out_of_bounds_are_a_422_naming_the_field(
        site: Site, field: str, value: Any, msg: str) -> None:
    seat = site.seat("HX", unique("T"))
    resp = _raw_post(seat, json.dumps({"events": [_fresh(seat, **{field: value})]}).encode())
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail[0]["loc"] == ["events", 0, field], detail
    assert msg in detail[0]["msg"]


def test_a_record_an_hour_ahead_is_still_taken(site: Site) -> None:
    seat = site.seat("HX", unique("T"))
    seat.event("files.copied", "violation", ts=time.time() + 3600)
    assert seat.post(seat.record("agent.started"))["acked"] == 2


@pytest.mark.parametrize(("raw", "loc"), [
    ('{"x": NaN}', ["x"]), ('{"x": [1, Infinity]}', ["x", 1]), ('{"x": -Infinity}', ["x"]),
    ('{"x": 1e999}', ["x"]), ('{"x": "\\ud800"}', ["x"]), ('{"x": {"y": "a\\udfffb"}}',
                                                           ["x", "y"]),
])
def test_nan_infinity_and_lone_surrogates_are_named_in_details_and_heartbeats(
        site: Site, raw: str, loc: list[Any]) -> None:
    seat = site.seat("HX", unique("T"))
    rec = _fresh(seat)
    text = json.dumps({"events": [rec]}).replace('"details": {}', '"details": ' + raw)
    resp = _raw_post(seat, text.encode())
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "events", 0, "details", *loc]
    inner = raw.split(": ", 1)[1][:-1]  # the hostile value, now a heartbeat's interval
    hb = httpx.post(site.url + "/api/v1/heartbeat", timeout=10,
                    content='{"status": {"interval": ' + inner + "}}",
                    headers={"Authorization": f"Bearer {seat.token}",
                             "Content-Type": "application/json"})
    assert hb.status_code == 422, hb.text
    assert hb.json()["detail"][0]["loc"][:3] == ["body", "status", "interval"]


def test_deep_json_is_a_422_not_a_crash(site: Site) -> None:
    seat = site.seat("HX", unique("T"))
    deep = "[" * 5000 + "]" * 5000
    for body in (deep, '{"events": [' + deep + "]}",
                 json.dumps({"events": [_fresh(seat)]}).replace('"details": {}',
                                                               '"details": {"a": ' + deep + "}")):
        resp = _raw_post(seat, body.encode())
        assert resp.status_code == 422, resp.text[:300]
        assert "nested" in resp.text
    admin = site.login("admin1")
    resp = admin.post(f"/api/v1/print/jobs/{seat.agent_id}/1/decision", content=deep,
                      headers={"Content-Type": "application/json",
                               "X-CSRF-Token": site.csrf(admin)})
    # FastAPI parses this route's body itself: a 400, never a crash.
    assert resp.status_code in (400, 422), resp.text[:300]
    resp = admin.post(f"/api/v1/print/jobs/{seat.agent_id}/1/decision",
                      content='{"decision": "deny", "reason": "\\ud800"}',
                      headers={"Content-Type": "application/json",
                               "X-CSRF-Token": site.csrf(admin)})
    assert resp.status_code < 500, resp.text[:300]


hostile: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([2**63, -(2**63) - 1, 10**40, float("nan"), float("inf"), -float("inf"),
                     "\ud800", "\udfff", "x\ud834", "2026-13-01T00:00:00Z",
                     "9999-12-31T23:00:00Z", "0000-00-00T00:00:00Z", None, [], {}, True]),
    st.text(max_size=5), st.integers(), st.floats(allow_nan=True, allow_infinity=True))
FIELDS = ("id", "seq", "ts", "agent", "host", "seat", "user", "control", "kind",
          "severity", "policy", "details", "prev", "hash")


@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=hostile, nested=st.booleans())
def test_any_hostile_value_in_any_event_field_is_refused_naming_it_or_stored(
        site: Site, field: str, value: Any, nested: bool) -> None:
    seat = _hyp_seat(site)
    rec = _fresh(seat)
    if nested:
        rec["details"] = {"v": value}
        field_loc: list[Any] = ["details", "v"]
    else:
        rec[field] = value
        field_loc = [field]
    body = json.dumps({"events": [rec]}, allow_nan=True).encode()
    resp = _raw_post(seat, body)
    assert resp.status_code < 500, resp.text[:300]
    if resp.status_code == 422:
        detail = resp.json()["detail"]
        locs = [d["loc"] for d in detail] if isinstance(detail, list) else []
        assert any(loc[-len(field_loc):] == field_loc or (loc[:1] == ["events"]
                   and loc[2:3] == field_loc[:1]) for loc in locs) or \
            (isinstance(detail, str) and detail.split(":")[0] in ("events", "body")), detail
    elif resp.status_code == 200:
        seat.seq += 1
        seat.prev = rec["hash"]


_seats: dict[str, Seat] = {}


def _hyp_seat(site: Site) -> Seat:
    if site.backend not in _seats:
        _seats[site.backend] = site.seat("HX", unique("P"))
    return _seats[site.backend]


def test_a_stored_time_no_calendar_holds_breaks_no_page(site: Site) -> None:
    seat = site.seat("HX", unique("Z"))
    seat.event("files.copied", "violation")
    base = dict(site.rows(sa.select(events).where(events.c.agent == seat.agent_id))[0]
                ._mapping)
    with site.engine.begin() as conn:
        for seq, ts_us in ((900, 253402297200000000), (901, 2**62), (902, -(2**62))):
            conn.execute(events.insert().values({**base, "seq": seq, "ts_us": ts_us,
                                                 "ts": "9999-12-31T23:00:00Z"}))
    admin = site.login("aud1")
    try:
        for page in ("/violations", "/violations?severity=", "/events",
                     f"/seats/{seat.agent_id}", f"/violations/{seat.agent_id}/900",
                     f"/violations/{seat.agent_id}/902", "/floor", "/floor/tiles"):
            resp = admin.get(page)
            assert resp.status_code == 200, (page, resp.text[:300])
        assert "?" in admin.get(f"/violations/{seat.agent_id}/901").text
    finally:
        with site.engine.begin() as conn:
            conn.execute(events.delete().where(events.c.agent == seat.agent_id,
                                               events.c.seq >= 900))


def test_a_forward_clock_jump_does_not_freeze_the_seat_tile(site: Site) -> None:
    seat = site.seat("HX", unique("J"))
    seat.event("agent.started", user="alice", ts=time.time() + 20 * 3600)  # clock ahead
    seat.event("idle.locked", user="bob")  # the clock was set right
    row = site.rows(sa.select(seat_state).where(seat_state.c.agent == seat.agent_id))[0]
    assert row.user == "bob" and row.locked
    assert row.last_event_us <= int(time.time() * 1e6)


def test_fold_counts_a_future_record_as_made_now() -> None:
    now = 1_000_000
    s = fold({"locked": False}, [{"ts_us": now * 50, "kind": "idle.locked", "severity": "info",
                                  "seat": "A", "host": "h", "user": "u"}], now)
    s = fold(s, [{"ts_us": now + 5, "kind": "idle.unlocked", "severity": "info",
                  "seat": "A", "host": "h", "user": "u"}], now + 10)
    assert s["locked"] is False and s["last_event_us"] == now + 5


@given(st.datetimes(timezones=st.just(__import__("datetime").UTC)))
def test_event_ts_bound_is_exactly_2000_to_a_day_ahead(dt: Any) -> None:
    ts = rfc3339(dt.timestamp()) if 1 < dt.year < 9999 else None
    if ts is None:
        return
    now = 1_780_000_000.0
    ok = dt.year >= 2000 and dt.timestamp() <= now + 86400
    try:
        check_event_ts(ts, now_s=now)
        assert ok, ts
    except ValueError:
        assert not ok, ts


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=20))
def test_json_problem_names_a_place_that_really_holds_the_problem(value: Any) -> None:
    problem = json_problem(value)
    if problem is None:
        json.dumps(value, allow_nan=False).encode("utf-8")  # storable as it is
        return
    loc, _msg, kind = problem
    if kind == "finite_number":
        v = _at(value, loc)
        assert isinstance(v, float) and not math.isfinite(v)
    elif kind == "surrogate":
        try:
            v = _at(value, loc)
        except (KeyError, IndexError, TypeError):  # the key itself: loc ends escaped
            parent = _at(value, loc[:-1])
            assert any(not _utf8(k) for k in parent)
        else:
            assert isinstance(v, str) and not _utf8(v)


def _at(value: Any, loc: list[Any]) -> Any:
    for step in loc:
        value = value[step]
    return value


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_a_body_over_the_limit_is_refused_before_it_is_read(site: Site) -> None:
    host, port = site.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  b"boundary=b\r\nContent-Length: 300000000\r\n\r\n--b\r\n")
        reply = _read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"300000000 bytes" in reply
    # Chunked, no length: cut off at the cap as the form parser reads it.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                  b"x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"username=" + b"a" * (FORM_LIMIT + 10)
        s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        reply = _read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"limit" in reply
    # The agent API keeps its own larger allowance.
    seat = site.seat("HX", unique("B"))
    big = json.dumps({"events": [seat.record("agent.started")],
                      "pad": "x" * (FORM_LIMIT * 2)})
    resp = _raw_post(seat, big.encode())
    assert resp.status_code == 422  # read and validated ("pad" is no field), not a 413
    assert resp.json()["detail"][0]["loc"] == ["pad"]


def _read_reply(s: socket.socket) -> bytes:
    """Everything the console sends until it closes (it says Connection: close)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


@pytest.mark.parametrize(("status", "loc"), [
    ({"controls": 5}, ["status", "controls"]),
    ({"controls": ["usb", 7]}, ["status", "controls", 1]),
    ({"unavailable": "usb"}, ["status", "unavailable"]),
    ({"idle_seconds": "9"}, ["status", "idle_seconds"]),
    ({"interval": -5}, ["status", "interval"]),
    ({"locked": "yes"}, ["status", "locked"]),
    ({"version": {"x": 1}}, ["status", "version"]),
])
def test_a_heartbeat_with_odd_types_is_a_422_naming_the_fact(
        site: Site, status: dict[str, Any], loc: list[Any]) -> None:
    seat = site.seat("HX", unique("K"))
    resp = httpx.post(site.url + "/api/v1/heartbeat", json={"status": status}, timeout=10,
                      headers={"Authorization": f"Bearer {seat.token}"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"][:len(loc)] == loc, resp.text
    # What real agents send, plus a fact a control adds, is taken.
    ok = httpx.post(site.url + "/api/v1/heartbeat", timeout=10, json={"status": {
        "version": "1.0", "policy": None, "controls": ["usb", "idle"], "unavailable": {},
        "user": "tanaka", "session_user": "tanaka", "locked": False, "interval": 30.0,
        "pending": 0, "usb": {"devices": 2}}},
        headers={"Authorization": f"Bearer {seat.token}"})
    assert ok.status_code == 200, ok.text


def test_a_stored_heartbeat_status_of_odd_types_breaks_no_page(site: Site) -> None:
    from floorguard.console.store.schema import agents

    seat = site.seat("HX", unique("Q"))
    bad = {"controls": 5, "unavailable": ["usb"], "version": {"x": 1}, "user": ["a"],
           "locked": "yes", "idle_seconds": "9", "interval": "x"}
    site.heartbeat(seat, bad)
    client = site.login("admin1")
    try:
        for page in ("/floor", "/floor/tiles", "/agents", "/coverage",
                     f"/seats/{seat.agent_id}"):
            resp = client.get(page)
            assert resp.status_code == 200, (page, resp.text[:300])
    finally:
        with site.engine.begin() as conn:
            conn.execute(agents.update().where(agents.c.id == seat.agent_id)
                         .values(status={}))


def _stalled_body(idle_s: float, total_s: float, drip_s: float | None) -> tuple[int, float]:
    """Run BodyLimits over a real Starlette route that reads its body, fed by a client
    that sends 2 bytes and then nothing (``drip_s`` None) or a byte every ``drip_s``."""
    import asyncio
    import threading

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from floorguard.console.api.limits import BodyLimits

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    app = BodyLimits(Starlette(routes=[Route("/x", echo, methods=["POST"])]),
                     idle_s=idle_s, total_s=total_s)
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"ab", "more_body": True}
        if drip_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(drip_s or 0)
        return {"type": "http.request", "body": b"c", "more_body": True}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [],
             "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    t0 = time.monotonic()
    # A loop of its own on a thread: another plugin's loop may be running on this one.
    runner = threading.Thread(target=asyncio.run,
                              args=(asyncio.wait_for(app(scope, receive, send), 10),))
    runner.start()
    runner.join()
    return int(sent[0]["status"]), time.monotonic() - t0


def test_a_body_that_stops_arriving_is_a_408() -> None:
    status, took = _stalled_body(idle_s=0.2, total_s=30, drip_s=None)
    assert status == 408 and took < 2


def test_a_body_dripped_slower_than_the_whole_deadline_is_a_408() -> None:
    status, took = _stalled_body(idle_s=5, total_s=0.5, drip_s=0.05)
    assert status == 408 and took < 3
