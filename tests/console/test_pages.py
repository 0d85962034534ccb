"""The console's pages against a live console over both stores: seat states on the floor
view, live notices, violations (filters, keyset pages, acknowledgements), agents, SV duty
and the ratio check, floor settings, languages and time zones."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from floorguard.console.console_events import CONSOLE_AGENT
from floorguard.console.floors import floor_policy
from floorguard.console.ratio import GRACE_US, check_ratios
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import audit_log, events, violation_acks
from floorguard.events import GENESIS, verify_chain
from tests.console.kit import Site, count, unique


def tiles(client: httpx.Client) -> dict[str, str]:
    page = client.get("/floor/tiles")
    assert page.status_code == 200, page.text
    return dict(re.findall(r'data-agent="([^"]+)" data-state="([^"]+)"', page.text))


def set_floor(site: Site, floor: str, **values: str) -> httpx.Response:
    admin = site.login("admin1")
    form = {"floor": floor, "max_operators_per_sv": "", "timezone": "Asia/Tokyo",
            "idle_unlocked_after": "5m", "heartbeat_interval": "30s", **values}
    return admin.post("/admin/floors", data={**form, "csrf": site.csrf(admin)})


def test_floor_tiles_show_each_seat_state_from_events_and_heartbeats(site: Site) -> None:
    floor = unique("3F")
    ok, bad, idle, locked, silent, hb_locked = (site.seat(floor, f"A-0{i}") for i in range(6))
    ok.event("agent.started", user="tanaka")
    bad.event("usb.blocked", "violation", user="suzuki", details={"device": "0781:5567"})
    idle.event("idle.warned", "warning", user="sato")
    locked.event("idle.warned", "warning", user="ito")
    locked.event("idle.locked", user="ito")
    silent.event("agent.started", user="kato")
    site.set_last_seen(silent, now_us() - 10 * 60 * 1_000_000)
    hb_locked.event("agent.started", user="abe")
    site.heartbeat(hb_locked, {"user": "abe", "locked": True, "controls": ["usb"],
                               "unavailable": {}, "version": "0.1.0", "policy": "b" * 64})
    client = site.login("sv1")
    state = tiles(client)
    assert state[ok.agent_id] == "ok"
    assert state[bad.agent_id] == "violation"
    assert state[idle.agent_id] == "idle"
    assert state[locked.agent_id] == "locked"
    assert state[silent.agent_id] == "silent"
    assert state[hb_locked.agent_id] == "locked"
    page = client.get("/floor/tiles").text
    section = page[page.index(f'data-floor="{floor}"'):]
    assert "suzuki" in section and "usb.blocked" in section
    # Unlocking clears the idle and locked states.
    locked.event("idle.unlocked", user="ito")
    idle.event("idle.unlocked", user="sato")
    state = tiles(client)
    assert state[locked.agent_id] == "ok" and state[idle.agent_id] == "ok"


def test_floor_stream_notifies_within_a_second_of_ingest(site: Site) -> None:
    seat = site.seat(unique("live"), "L-01")
    client = site.login("aud1")
    got: list[str] = []
    opened = threading.Event()

    def listen() -> None:
        with client.stream("GET", "/floor/stream", timeout=10) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for line in resp.iter_lines():
                if line.startswith("data:") and seat.agent_id in line:
                    got.append(line)
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert opened.wait(5)
    time.sleep(0.2)  # the subscription is registered right after the headers
    started = time.monotonic()
    seat.event("usb.blocked", "violation", user="op9")
    t.join(5)
    assert got, "no change notice arrived"
    print(f"notice after {time.monotonic() - started:.3f}s")


def test_seat_timeline_lists_the_seats_events_newest_first(site: Site) -> None:
    seat = site.seat(unique("tl"), "T-09")
    for kind in ("agent.started", "idle.warned", "idle.locked"):
        seat.event(kind, "warning" if kind == "idle.warned" else "info", user="mori")
    page = site.login("sv1").get(f"/seats/{seat.agent_id}").text
    assert page.index("idle.locked") < page.index("idle.warned") < page.index("agent.started")
    assert site.login("sv1").get("/seats/not-an-agent").status_code == 404


def _violation_keys(page: str) -> list[tuple[str, int]]:
    return [(a, int(s)) for a, s in re.findall(r'data-agent="([^"]+)" data-seq="(\d+)"', page)]


def test_violations_filter_and_page_by_keyset_without_gaps_or_repeats(site: Site) -> None:
    floor = unique("vf")
    seat = site.seat(floor, unique("V"))
    other = site.seat(floor, unique("W"))
    base = time.time() - 3600
    recs = [seat.record("usb.blocked", "violation", user="op-a", ts=base + i)
            for i in range(120)]
    for i in range(0, 120, 60):
        seat.post(*recs[i:i + 60])
    seat.event("idle.warned", "warning", user="op-a")
    other.event("processes.killed", "violation", user="op-b")
    client = site.login("aud1")
    seen: list[tuple[str, int]] = []
    url = f"/violations?seat={seat.seat}"
    pages = 0
    while url:
        page = client.get(url).text
        seen += _violation_keys(page)
        m = re.search(r'href="/violations\?([^"]+)" rel="next"', page)
        url = "/violations?" + m.group(1).replace("&amp;", "&") if m else ""
        pages += 1
    assert pages == 3
    assert seen == [(seat.agent_id, s) for s in range(120, 0, -1)]
    # Each filter narrows to what it names.
    by_op = _violation_keys(client.get("/violations", params={"operator": "op-b"}).text)
    assert by_op == [(other.agent_id, 1)]
    by_kind = client.get("/violations", params={"kind": "processes.killed",
                                                "control": "processes"}).text
    assert (other.agent_id, 1) in _violation_keys(by_kind)
    assert seat.agent_id not in by_kind
    warnings = _violation_keys(client.get("/violations", params={
        "seat": seat.seat, "severity": "warning"}).text)
    assert warnings == [(seat.agent_id, 121)]
    today = datetime.fromtimestamp(base + 100, UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Tokyo")).date().isoformat()
    on_day = _violation_keys(client.get("/violations", params={
        "seat": seat.seat, "day": today}).text)
    assert len(on_day) == 50  # a full first page on that day
    assert _violation_keys(client.get("/violations", params={
        "seat": seat.seat, "day": "2001-01-01"}).text) == []
    bad = client.get("/violations", params={"day": "yesterday"})
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text


def test_sv_acknowledges_a_violation_and_the_event_stays_as_it_was(site: Site) -> None:
    seat = site.seat(unique("ack"), "K-01")
    rec = seat.event("usb.blocked", "violation", user="op-k", details={"device": "abcd:1234"})
    info = seat.event("usb.allowed", "info", user="op-k")
    url = f"/violations/{seat.agent_id}/{rec['seq']}"
    auditor = site.login("aud1")
    detail = auditor.get(url).text
    for text in (rec["hash"], rec["prev"], rec["policy"], "abcd:1234"):
        assert text in detail
    assert "/ack" not in detail  # no acknowledge control for an auditor
    assert auditor.post(url + "/ack", data={"comment": "x", "csrf": site.csrf(auditor)}
                        ).status_code == 403
    sv = site.login("sv1")
    token = site.csrf(sv)
    assert "/ack" in sv.get(url).text
    assert sv.post(url + "/ack", data={"comment": "  ", "csrf": token}).status_code == 422
    assert sv.post(f"/violations/{seat.agent_id}/{info['seq']}/ack",
                   data={"comment": "not a violation", "csrf": token}).status_code == 422
    done = sv.post(url + "/ack", data={"comment": "stick taken to the locker", "csrf": token})
    assert done.status_code == 303
    assert "stick taken to the locker" in sv.get(url).text
    assert count(site, violation_acks, violation_acks.c.agent == seat.agent_id) == 1
    assert count(site, audit_log, audit_log.c.action == "violation.acknowledged",
                 audit_log.c.target == f"{seat.agent_id}/{rec['seq']}") == 1
    stored = site.rows(sa.select(events).where(events.c.agent == seat.agent_id)
                       .order_by(events.c.seq))
    assert [dict(r._mapping)["hash"] for r in stored] == [rec["hash"], info["hash"]]
    chain = [{k: r._mapping[k] for k in rec} for r in stored]
    assert verify_chain(chain) == (None, "intact")


def test_agents_page_shows_versions_gaps_and_silent_agents(site: Site) -> None:
    floor = unique("ag")
    live, gone = site.seat(floor, "G-01"), site.seat(floor, "G-02")
    live.event("agent.started")
    site.heartbeat(live, {"user": None, "locked": False, "controls": ["usb", "idle"],
                          "unavailable": {"print": "CUPS not reachable"},
                          "version": "9.9.9", "policy": "c" * 64})
    gone.event("agent.started")
    site.set_last_seen(gone, now_us() - 91 * 1_000_000)  # > 3 x 30 s
    page = site.login("aud1").get("/coverage").text
    row = page[page.index(f'data-agent="{live.agent_id}"'):]
    row = row[:row.index("</tr>")]
    assert "9.9.9" in row and "usb, idle" in row and "print" in row
    assert "CUPS not reachable" in row and "c" * 12 in row
    silent_row = page[page.index(f'data-agent="{gone.agent_id}"') - 40:]
    assert 'class="silent"' in silent_row[:200]


def test_floor_settings_validate_and_save(site: Site) -> None:
    floor = unique("fs")
    bad = set_floor(site, floor, max_operators_per_sv="zero", timezone="Mars/Olympus",
                    heartbeat_interval="often")
    assert bad.status_code == 422
    assert "IANA" in bad.text and "Operators per SV" in bad.text and "30s" in bad.text
    assert set_floor(site, floor, max_operators_per_sv="8", timezone="UTC",
                     heartbeat_interval="1m").status_code == 303
    with site.engine.connect() as conn:
        p = floor_policy(conn, floor)
    assert (p.max_operators_per_sv, p.timezone, p.heartbeat_interval_s) == (8, "UTC", 60.0)
    assert site.login("sv1").get("/admin/floors").status_code == 403


def test_sv_ratio_exceeded_for_longer_than_grace_records_one_console_violation(
        site: Site) -> None:
    floor = unique("ratio")
    # Long heartbeat interval: the injected clock runs minutes ahead of the seats.
    assert set_floor(site, floor, max_operators_per_sv="2",
                     heartbeat_interval="1h").status_code == 303
    for i in range(3):
        site.seat(floor, f"R-0{i}").event("agent.started", user=f"temp{i}")
    sv = site.login("sv1")
    assert sv.post("/duty", data={"action": "on", "floor": floor, "csrf": site.csrf(sv)}
                   ).status_code == 303
    page = sv.get("/floor/tiles").text
    section = page[page.index(f'data-floor="{floor}"'):]
    assert 'class="ratio exceeded"' in section[:200]
    t0 = now_us()

    def ratio_events() -> list[Any]:
        return [r for r in site.rows(sa.select(events).where(
            events.c.agent == CONSOLE_AGENT, events.c.kind == "floor.sv_ratio_exceeded"))
            if r.details["floor"] == floor]

    assert [e for e in check_ratios(site.engine, t0) if e["details"]["floor"] == floor] == []
    check_ratios(site.engine, t0 + GRACE_US - 1)
    assert ratio_events() == []
    check_ratios(site.engine, t0 + GRACE_US + 1)
    check_ratios(site.engine, t0 + GRACE_US + 2)  # one episode, one event
    (ev,) = ratio_events()
    assert ev.severity == "violation"
    assert ev.details["operators"] == 3 and ev.details["svs_on_duty"] == 1
    assert ev.details["max_operators_per_sv"] == 2
    # The console's own records form an intact chain.
    chain = [{k: r._mapping[k] for k in ("id", "seq", "ts", "agent", "host", "seat", "user",
                                          "control", "kind", "severity", "policy", "details",
                                          "prev", "hash")}
             for r in site.rows(sa.select(events).where(events.c.agent == CONSOLE_AGENT)
                                .order_by(events.c.seq))]
    assert verify_chain(chain, 1, GENESIS) == (None, "intact")
    # It is listed with the other violations.
    listed = site.login("aud1").get("/violations", params={
        "kind": "floor.sv_ratio_exceeded"}).text
    assert f'data-agent="{CONSOLE_AGENT}" data-seq="{ev.seq}"' in listed
    # A second SV on duty ends the episode.
    sv2 = site.login("sv2")
    sv2.post("/duty", data={"action": "on", "floor": floor, "csrf": site.csrf(sv2)})
    check_ratios(site.engine, t0 + 2 * GRACE_US)
    assert 'class="ratio exceeded"' not in sv.get("/floor/tiles").text.split(
        f'data-floor="{floor}"')[1][:200]
    for client in (sv, sv2):
        client.post("/duty", data={"action": "off", "csrf": site.csrf(client)})
    assert count(site, audit_log, audit_log.c.action == "duty.on",
                 audit_log.c.target == floor) == 2


def test_language_from_browser_user_choice_and_times_in_floor_zone(site: Site) -> None:
    name = unique("sv")
    site.add_user(name, "sv")
    client = site.login(name)
    assert "フロア" in client.get("/floor", headers={"Accept-Language": "ja-JP,ja;q=0.9"}).text
    assert ">Floor<" in client.get("/floor", headers={"Accept-Language": "en-US"}).text
    token = site.csrf(client)
    assert client.post("/account/lang", data={"lang": "en", "csrf": token}).status_code == 303
    assert ">Floor<" in client.get("/floor", headers={"Accept-Language": "ja"}).text
    assert client.post("/account/lang", data={"lang": "xx", "csrf": token}).status_code == 422
    # Times on a seat's page are in its floor's zone.
    floor = unique("tz")
    seat = site.seat(floor, "Z-01", staff=(name,))
    t = datetime(2026, 11, 27, 23, 30, tzinfo=UTC).timestamp()
    seat.event("agent.started", ts=t)
    assert "2026-11-28 08:30:00" in client.get(f"/seats/{seat.agent_id}").text  # JST
    assert set_floor(site, floor, timezone="Europe/London").status_code == 303
    assert "2026-11-27 23:30:00" in client.get(f"/seats/{seat.agent_id}").text
