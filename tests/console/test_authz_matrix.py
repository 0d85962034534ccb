"""Every route of the console times every principal (anonymous, an agent token, admin,
SV, auditor, an auditor limited to one floor) against the expected allow/deny, on a live
console over both stores, and for each route about a floor, on the principal's own floor
and on a floor that is not theirs.

The tables below must name every route the app has: a new route without an entry fails
this test, so nobody adds a page without deciding who may open it and whether it is
about a floor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from floorguard.console.app import create_app
from tests.console.kit import Seat, Site, unique
from tests.rigs.processes import PASSWORD

ANON, AGENT, ADMIN, SV, AUDITOR = "anonymous", "agent", "admin", "sv", "auditor"
# An auditor who is a member of the own floor only (an auditor with no floors reads all).
SCOPED = "auditor-one-floor"
PRINCIPALS = (ANON, AGENT, ADMIN, SV, AUDITOR, SCOPED)
EVERYONE = set(PRINCIPALS)
USERS = {ADMIN, SV, AUDITOR, SCOPED}
READERS = {ADMIN, AUDITOR, SCOPED}

# (method, path) -> who is let through. Public routes list everyone.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/openapi.json"): EVERYONE,
    ("GET", "/healthz"): EVERYONE,
    ("GET", "/static"): EVERYONE,
    ("POST", "/api/v1/events"): {AGENT},
    # Enrollment is authorised by a one-time code, never by a session or agent token.
    ("POST", "/api/v1/enroll"): set(),
    ("GET", "/login"): EVERYONE,
    ("POST", "/login"): EVERYONE,
    ("POST", "/logout"): EVERYONE,
    ("GET", "/"): USERS,
    ("GET", "/events"): USERS,
    ("GET", "/floor"): USERS,
    ("GET", "/floor/tiles"): USERS,
    ("GET", "/floor/stream"): USERS,
    ("GET", "/seats/{agent_id}"): USERS,
    ("GET", "/violations"): USERS,
    ("GET", "/violations/{agent}/{seq}"): USERS,
    ("POST", "/violations/{agent}/{seq}/ack"): {SV},
    ("GET", "/agents"): USERS,
    ("POST", "/duty"): {SV},
    ("GET", "/audit"): READERS,
    ("GET", "/admin/floors"): {ADMIN},
    ("POST", "/admin/floors"): {ADMIN},
    ("GET", "/admin/accounts"): {ADMIN},
    ("POST", "/admin/accounts/{name}/floors"): {ADMIN},
    ("POST", "/account/lang"): USERS,
    ("GET", "/coverage"): USERS,
    # The link's agent API: the agent's own token only.
    ("POST", "/api/v1/heartbeat"): {AGENT},
    ("GET", "/api/v1/commands"): {AGENT},
    ("POST", "/api/v1/commands/{command_id}/result"): {AGENT},
    ("GET", "/api/v1/policy"): {AGENT},
    # Fleet pages (GET /agents is listed above).
    ("POST", "/agents/{agent_id}/lock"): {ADMIN, SV},
    ("POST", "/agents/{agent_id}/reload"): {ADMIN},
    ("POST", "/agents/{agent_id}/revoke"): {ADMIN},
    ("POST", "/agents/enroll-code"): {ADMIN},
    ("GET", "/policies"): {ADMIN},
    ("POST", "/policies"): {ADMIN},
    # Print approvals.
    ("GET", "/print"): USERS,
    ("GET", "/print/trail"): USERS,
    ("GET", "/print/thumbnail/{agent_id}/{job_id}"): USERS,
    ("POST", "/print/{agent_id}/{job_id}/approve"): {ADMIN, SV},
    ("POST", "/print/{agent_id}/{job_id}/deny"): {ADMIN, SV},
    ("GET", "/api/v1/print/jobs"): USERS,
    ("POST", "/api/v1/print/jobs/{agent_id}/{job_id}/decision"): {ADMIN, SV},
    # Reports.
    ("GET", "/reports"): READERS,
    ("GET", "/reports/daily"): READERS,
    # Archived reports cover every floor: not for an auditor limited to some floors.
    ("GET", "/reports/archive/{rid}"): {ADMIN, AUDITOR},
    ("POST", "/reports/archive"): {ADMIN, AUDITOR},
    ("POST", "/reports/verify"): READERS,
}
# Routes about one floor's seat, event, job or the floor itself: run once on the own floor
# (as EXPECTED) and once on the other floor, where SVs and floor-limited auditors are
# refused.
TARGETED = {
    ("GET", "/seats/{agent_id}"), ("GET", "/violations/{agent}/{seq}"),
    ("POST", "/violations/{agent}/{seq}/ack"), ("POST", "/duty"),
    ("POST", "/agents/{agent_id}/lock"), ("GET", "/print/thumbnail/{agent_id}/{job_id}"),
    ("POST", "/print/{agent_id}/{job_id}/approve"), ("POST", "/print/{agent_id}/{job_id}/deny"),
    ("POST", "/api/v1/print/jobs/{agent_id}/{job_id}/decision"), ("GET", "/reports/daily"),
}
# Lists over floors: those allowed see their own floor's seat in it, and the other floor's
# only when they may read every floor.
LISTS = {
    ("GET", "/events"), ("GET", "/floor"), ("GET", "/floor/tiles"), ("GET", "/violations"),
    ("GET", "/agents"), ("GET", "/coverage"), ("GET", "/print"), ("GET", "/print/trail"),
    ("GET", "/api/v1/print/jobs"), ("GET", "/reports"),
}
# Not about a floor: public pages, the agents' own API (their token names the agent),
# admin-only pages (admins see every floor), the user's own settings, the audit trail
# (site-wide, see README), archived reports (whole site), report verification (a digest),
# and the floor stream (a bare "something changed" notice).
FLOORLESS = set(EXPECTED) - TARGETED - LISTS
ALL_FLOORS = {ADMIN, AUDITOR}

# Sign-out ends the caller's own session: run it last.
LAST = (("POST", "/logout"),)


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route of the app, including those of included routers."""
    app = create_app("sqlite://")
    found: set[tuple[str, str]] = set()

    def walk(routes: Any) -> Iterator[tuple[str, set[str] | None]]:
        for r in routes:
            if hasattr(r, "effective_route_contexts"):
                for c in r.effective_route_contexts():
                    yield c.path, getattr(c.original_route, "methods", None)
            else:
                yield r.path, getattr(r, "methods", None)

    for path, methods in walk(app.routes):
        for method in methods or {"GET"}:
            if method != "HEAD":
                found.add((method, path))
    return found


def test_the_table_names_every_route() -> None:
    assert app_routes() == set(EXPECTED), "add the new route to EXPECTED with who may use it"
    assert set(EXPECTED) >= TARGETED | LISTS and not TARGETED & LISTS
    assert {r for r in FLOORLESS if r[1].startswith(("/violations", "/print", "/seats"))} \
        == set(), "a route about seats, events or jobs is about a floor: add it to TARGETED"


def _denied(resp: httpx.Response) -> bool:
    if resp.status_code in (401, 403):
        return True
    return resp.status_code == 303 and resp.headers.get("location", "").startswith(
        "/login?next=")


def _populate(seat: Seat) -> None:
    seat.event("usb.blocked", "violation", user="op1", details={"device": "0781:5567"})
    for job in (1, 2):  # job 1 is decided in the matrix, job 2 stays held for the lists
        seat.event("print.held", user="op1", details={"job_id": job, "title": "payslips",
                                                       "queue": "q", "pages": 1})


@pytest.fixture(scope="module")
def fixtures(site: Site) -> dict[str, Any]:
    floor, other_floor = unique("matrix"), unique("elsewhere")
    seat = site.seat(floor, unique("OWN"))  # sv1's floor
    _populate(seat)
    other = site.seat(other_floor, unique("OTHER"), staff=())  # nobody's floor
    _populate(other)
    site.add_user(f"{floor}-login", "auditor")
    site.add_user(f"{floor}-aud", "auditor", floors=(floor,))
    victim = site.seat(floor, "M-02")  # the agent an admin revokes
    return {"floor": floor, "seat": seat, "login_user": f"{floor}-login", "victim": victim,
            "other_floor": other_floor, "other": other, "scoped_auditor": f"{floor}-aud"}


def _client(site: Site, who: str, seat: Seat, fx: dict[str, Any]) -> httpx.Client:
    if who == ANON:
        return httpx.Client(base_url=site.url, timeout=10, headers={"Origin": site.url})
    if who == AGENT:
        return httpx.Client(base_url=site.url, timeout=10, headers={
            "Authorization": f"Bearer {seat.token}", "Origin": site.url})
    name = {ADMIN: "admin1", SV: "sv1", AUDITOR: "aud1", SCOPED: fx["scoped_auditor"]}[who]
    return site.login(name)


def _request(site: Site, client: httpx.Client, who: str, method: str, path: str,
             fx: dict[str, Any], on: str = "seat") -> httpx.Response:
    """The request, about the own floor's seat (``on="seat"``) or the other floor's."""
    seat: Seat = fx[on]
    floor = seat.floor
    ev = seat.posted[0]
    target = fx["victim"].agent_id if path.endswith("/revoke") else seat.agent_id
    url = (path.replace("{agent_id}", target).replace("{agent}", seat.agent_id)
           .replace("{seq}", str(ev["seq"])).replace("{job_id}", "1")
           .replace("{command_id}", "999999").replace("{rid}", "1")
           # an account no one uses: an admin's change (404) must not move the matrix's SV
           .replace("{name}", "matrix-nobody"))
    if path == "/static":
        url = "/static/console.css"
    csrf = ""
    if who in USERS:
        csrf = site.csrf(client)
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    if method == "GET":
        if path == "/api/v1/commands":
            return client.get(url, params={"wait": 0})
        if path == "/floor/stream":
            with client.stream("GET", url) as resp:
                return resp
        if path == "/reports/daily":
            return client.get(url, params={"date": ev["ts"][:10], "format": "json",
                                           "floor": floor})
        return client.get(url)
    body: dict[str, Any] = {
        "/violations/{agent}/{seq}/ack": {"comment": f"checked by {who}"},
        "/duty": {"action": "on", "floor": floor},
        "/admin/floors": {"floor": fx["floor"], "max_operators_per_sv": "",
                          "timezone": "Asia/Tokyo", "idle_unlocked_after": "5m",
                          "heartbeat_interval": "30s"},
        "/account/lang": {"lang": "auto"},
        "/login": {"username": fx["login_user"], "password": PASSWORD},
        "/logout": {"csrf": csrf},
    }.get(path, {})
    if path == "/api/v1/events":
        rec = seat.record("usb.allowed", "info", user="op1")
        resp = client.post(url, json={"events": [rec]}, headers=headers)
        if resp.status_code != 200:
            seat.seq -= 1  # not stored: the chain goes on from the last stored record
            seat.prev = seat.posted[-1]["hash"]
        return resp
    if path == "/api/v1/enroll":
        return client.post(url, json={"code": "not-a-code-at-all", "agent_id":
                                      "00000000-0000-0000-0000-000000000000", "host": "h",
                                      "seat": "s"}, headers=headers)
    if path.endswith("/decision"):
        return client.post(url, json={"decision": "deny", "reason": f"matrix {who}"},
                           headers=headers)
    if path.startswith("/api/v1/"):
        return client.post(url, json={}, headers=headers)
    if path == "/login":
        # Public, and a sign-in replaces the caller's session: send it from the same
        # place with the same headers, but keep the principal's cookies out of it.
        return httpx.post(site.url + url, data=body, headers=dict(client.headers),
                          timeout=10)
    return client.post(url, data=body, headers=headers)


@pytest.mark.parametrize("who", PRINCIPALS)
def test_every_route_allows_exactly_the_expected_principals(
        site: Site, fixtures: dict[str, Any], who: str) -> None:
    seat = fixtures["seat"]
    client = _client(site, who, seat, fixtures)
    wrong = []
    ordered = sorted(set(EXPECTED) - set(LAST)) + list(LAST)
    for method, path in ordered:
        resp = _request(site, client, who, method, path, fixtures)
        assert resp.status_code < 500, (method, path, who, resp.status_code)
        allowed = not _denied(resp)
        if path == "/api/v1/enroll":
            allowed = resp.status_code not in (401, 403)
        if allowed != (who in EXPECTED[(method, path)]):
            wrong.append((method, path, resp.status_code))
    assert not wrong, f"{who}: unexpected allow/deny for {wrong}"


def _allowed_on_other_floor(who: str, route: tuple[str, str]) -> bool:
    return who in EXPECTED[route] and who in ALL_FLOORS


@pytest.mark.parametrize("who", PRINCIPALS)
def test_no_principal_reaches_a_floor_that_is_not_theirs(
        site: Site, fixtures: dict[str, Any], who: str) -> None:
    """Each route about a floor, on the other floor: only those who read every floor get
    through (writes: admins only), and nobody's decision or lock lands there otherwise."""
    client = _client(site, who, fixtures["seat"], fixtures)
    wrong = []
    for method, path in sorted(TARGETED):
        resp = _request(site, client, who, method, path, fixtures, on="other")
        assert resp.status_code < 500, (method, path, who, resp.status_code)
        if (not _denied(resp)) != _allowed_on_other_floor(who, (method, path)):
            wrong.append((method, path, resp.status_code, resp.text[:120]))
    assert not wrong, f"{who}, other floor: unexpected allow/deny for {wrong}"


@pytest.mark.parametrize("who", sorted(USERS))
def test_lists_show_the_own_floor_and_the_other_only_to_those_who_read_all(
        site: Site, fixtures: dict[str, Any], who: str) -> None:
    own: Seat = fixtures["seat"]
    other: Seat = fixtures["other"]
    client = _client(site, who, own, fixtures)
    wrong = []
    for method, path in sorted(LISTS):
        if who not in EXPECTED[(method, path)]:
            continue
        text = client.get(path).text
        mine = own.seat in text or fixtures["floor"] in text
        theirs = other.seat in text or fixtures["other_floor"] in text
        if not mine or theirs != (who in ALL_FLOORS):
            wrong.append((path, {"own shown": mine, "other shown": theirs}))
    assert not wrong, f"{who}: {wrong}"
