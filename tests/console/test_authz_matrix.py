"""Every route of the console times every principal (anonymous, an agent token, admin,
SV, auditor) against the expected allow/deny, on a live console over both stores.

The table below must name every route the app has: a new route without an entry fails
this test, so nobody adds a page without deciding who may open it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from floorguard.console.app import create_app
from tests.console.kit import Seat, Site, unique
from tests.live import PASSWORD

ANON, AGENT, ADMIN, SV, AUDITOR = "anonymous", "agent", "admin", "sv", "auditor"
PRINCIPALS = (ANON, AGENT, ADMIN, SV, AUDITOR)
EVERYONE = set(PRINCIPALS)
USERS = {ADMIN, SV, AUDITOR}

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
    ("GET", "/audit"): {ADMIN, AUDITOR},
    ("GET", "/admin/floors"): {ADMIN},
    ("POST", "/admin/floors"): {ADMIN},
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
    ("GET", "/reports"): {ADMIN, AUDITOR},
    ("GET", "/reports/daily"): {ADMIN, AUDITOR},
    ("GET", "/reports/archive/{rid}"): {ADMIN, AUDITOR},
    ("POST", "/reports/archive"): {ADMIN, AUDITOR},
    ("POST", "/reports/verify"): {ADMIN, AUDITOR},
}
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


def _denied(resp: httpx.Response) -> bool:
    if resp.status_code in (401, 403):
        return True
    return resp.status_code == 303 and resp.headers.get("location", "").startswith(
        "/login?next=")


@pytest.fixture(scope="module")
def fixtures(site: Site) -> dict[str, Any]:
    floor = unique("matrix")
    seat = site.seat(floor, "M-01")
    seat.event("usb.blocked", "violation", user="op1", details={"device": "0781:5567"})
    site.add_user(f"{floor}-login", "auditor")
    victim = site.seat(floor, "M-02")  # the agent an admin revokes
    return {"floor": floor, "seat": seat, "login_user": f"{floor}-login", "victim": victim}


def _client(site: Site, who: str, seat: Seat) -> httpx.Client:
    if who == ANON:
        return httpx.Client(base_url=site.url, timeout=10, headers={"Origin": site.url})
    if who == AGENT:
        return httpx.Client(base_url=site.url, timeout=10, headers={
            "Authorization": f"Bearer {seat.token}", "Origin": site.url})
    name = {ADMIN: "admin1", SV: "sv1", AUDITOR: "aud1"}[who]
    return site.login(name)


def _request(site: Site, client: httpx.Client, who: str, method: str, path: str,
             fx: dict[str, Any]) -> httpx.Response:
    seat: Seat = fx["seat"]
    ev = seat.posted[0]
    target = fx["victim"].agent_id if path.endswith("/revoke") else seat.agent_id
    url = (path.replace("{agent_id}", target).replace("{agent}", seat.agent_id)
           .replace("{seq}", str(ev["seq"])).replace("{job_id}", "1")
           .replace("{command_id}", "999999").replace("{rid}", "1"))
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
        return client.get(url)
    body: dict[str, Any] = {
        "/violations/{agent}/{seq}/ack": {"comment": f"checked by {who}"},
        "/duty": {"action": "off"},
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
    client = _client(site, who, seat)
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
