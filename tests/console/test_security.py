"""Accounts and sessions against a live console: CSRF and Origin, session fixation, login
throttling shared through the store, disabled users, expired sessions, cookie flags."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from floorguard.console.auth import SESSION_COOKIE, set_disabled, sha256_hex
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import audit_log, login_failures, sessions
from floorguard.console.throttle import MAX_PER_NAME
from tests.console.kit import Site, count, unique
from tests.rigs.console import LiveConsole
from tests.rigs.processes import PASSWORD


def test_session_cookie_is_httponly_samesite_strict_and_new_at_each_login(site: Site) -> None:
    client = site.login("sv1")
    assert client.cookies.get(SESSION_COOKIE)
    resp = httpx.post(site.url + "/login", data={"username": "sv1", "password": PASSWORD})
    header = resp.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in header
    assert "HttpOnly" in header and "SameSite=strict" in header.replace("Strict", "strict")
    assert "Secure" not in header  # plain HTTP on loopback: a Secure cookie would be lost
    assert resp.cookies[SESSION_COOKIE] != client.cookies[SESSION_COOKIE]


def test_state_change_without_csrf_token_or_from_another_origin_is_refused(site: Site) -> None:
    sv = unique("sv")
    site.add_user(sv, "sv", floors=("3F",))
    client = site.login(sv)
    token = site.csrf(client)
    no_token = client.post("/duty", data={"action": "off"})
    assert no_token.status_code == 403
    assert "CSRF" in no_token.text
    wrong = client.post("/duty", data={"action": "off", "csrf": "x" * 32})
    assert wrong.status_code == 403
    evil = client.post("/duty", data={"action": "on", "floor": "3F", "csrf": token},
                       headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    assert "another site" in evil.text
    header_token = client.post("/account/lang", data={"lang": "ja"},
                               headers={"X-CSRF-Token": token})
    assert header_token.status_code == 303
    ok = client.post("/duty", data={"action": "on", "floor": "3F", "csrf": token})
    assert ok.status_code == 303
    assert count(site, audit_log, audit_log.c.actor == sv, audit_log.c.action == "duty.on") == 1


def test_a_planted_session_cookie_never_becomes_a_signed_in_session(site: Site) -> None:
    # An attacker's own valid session, planted in the victim's browser before sign-in.
    attacker = site.login("aud1")
    planted = attacker.cookies[SESSION_COOKIE]
    victim = httpx.Client(base_url=site.url, follow_redirects=False, timeout=10)
    victim.cookies.set(SESSION_COOKIE, planted)
    resp = victim.post("/login", data={"username": "sv1", "password": PASSWORD, "next": "/"})
    assert resp.status_code == 303
    fresh = resp.cookies[SESSION_COOKIE]
    assert fresh != planted
    # The planted id is dead, for the attacker too; the fresh one is the victim's.
    assert attacker.get("/floor").status_code == 303
    assert site.scalar(sa.select(sa.func.count()).select_from(sessions).where(
        sessions.c.id_hash == sha256_hex(planted))) == 0
    victim.cookies.clear()
    victim.cookies.set(SESSION_COOKIE, fresh)
    page = victim.get("/floor")
    assert page.status_code == 200 and "sv1" in page.text
    # A made-up cookie value is simply not a session.
    stranger = httpx.Client(base_url=site.url, cookies={SESSION_COOKIE: "made-up-value"})
    assert stranger.get("/floor").status_code == 303


def test_login_throttled_after_five_failures_across_console_processes(
        site: Site, tmp_path: object) -> None:
    name = unique("sv")
    site.add_user(name, "sv")
    from pathlib import Path

    second = LiveConsole(Path(str(tmp_path)) / "second", db_url=site.db_url)
    try:
        second.start()
        consoles = [site.url, second.url]
        for i in range(MAX_PER_NAME):
            resp = httpx.post(consoles[i % 2] + "/login",
                              data={"username": name, "password": "wrong password!"})
            assert resp.status_code == 401, resp.text
        # The other process knows: even the right password is refused for now.
        for url in consoles:
            resp = httpx.post(url + "/login", data={"username": name, "password": PASSWORD},
                              headers={"Accept-Language": "en"})
            assert resp.status_code == 429
            assert "Too many failed sign-ins" in resp.text
            assert int(resp.headers["retry-after"]) > 0
        ja = httpx.post(second.url + "/login", data={"username": name, "password": PASSWORD},
                        headers={"Accept-Language": "ja"})
        assert ja.status_code == 429 and "サインイン" in ja.text
        assert count(site, audit_log, audit_log.c.actor == name,
                     audit_log.c.action == "login.throttled") == 3
        # When the failures leave the window, the right password works again.
        with site.engine.begin() as conn:
            conn.execute(login_failures.update().where(login_failures.c.name == name)
                         .values(ts_us=now_us() - 16 * 60 * 1_000_000))
        assert site.login(name).get("/floor").status_code == 200
    finally:
        second.stop()
        with site.engine.begin() as conn:  # leave no failures for 127.0.0.1 behind
            conn.execute(login_failures.delete())


def test_disabled_user_loses_every_session_at_once(site: Site) -> None:
    name = unique("sv")
    site.add_user(name, "sv")
    a, b = site.login(name), site.login(name)
    assert a.get("/floor").status_code == 200
    res = site.live.cli("user", "disable", name)
    assert res.returncode == 0, res.stderr
    for client in (a, b):
        assert client.get("/floor").status_code == 303
        assert client.get("/floor/tiles").status_code == 303
    resp = httpx.post(site.url + "/login", data={"username": name, "password": PASSWORD})
    assert resp.status_code == 401
    with site.engine.begin() as conn:
        set_disabled(conn, name, False)
        conn.execute(login_failures.delete())


def test_expired_sessions_are_refused_idle_and_absolute(site: Site) -> None:
    name = unique("aud")
    site.add_user(name, "auditor")
    absolute, idle = site.login(name), site.login(name)
    now = now_us()
    with site.engine.begin() as conn:
        conn.execute(sessions.update().where(
            sessions.c.id_hash == sha256_hex(absolute.cookies[SESSION_COOKIE]))
            .values(expires_us=now - 1))
        conn.execute(sessions.update().where(
            sessions.c.id_hash == sha256_hex(idle.cookies[SESSION_COOKIE]))
            .values(last_seen_us=now - 9 * 3600 * 1_000_000))
    assert absolute.get("/violations").status_code == 303
    assert idle.get("/violations").status_code == 303
    # The expired rows are gone, not just ignored.
    assert count(site, sessions, sessions.c.id_hash.in_([
        sha256_hex(absolute.cookies[SESSION_COOKIE]),
        sha256_hex(idle.cookies[SESSION_COOKIE])])) == 0


def test_logout_needs_the_token_and_ends_the_session(site: Site) -> None:
    client = site.login("aud1")
    token = site.csrf(client)
    assert client.post("/logout", data={"csrf": "nope"}).status_code == 403
    assert client.get("/floor").status_code == 200
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert client.get("/floor").status_code == 303


def test_audit_trail_is_read_only_and_records_console_actions(site: Site) -> None:
    admin = site.login("admin1")
    page = admin.get("/audit")
    assert page.status_code == 200
    assert 'data-action="login"' in page.text
    for method in ("post", "put", "patch", "delete"):
        resp = admin.request(method, "/audit", headers={"X-CSRF-Token": site.csrf(admin)})
        assert resp.status_code == 405
    assert site.login("sv1").get("/audit").status_code == 403


def test_over_https_the_session_cookie_is_secure_and_hsts_is_sent(
        site: Site, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl
    import subprocess
    from pathlib import Path

    d = Path(str(tmp_path))
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls = LiveConsole(d / "tls", db_url=site.db_url,
                      extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    tls.url = tls.url.replace("http://", "https://")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the readiness probe trusts the test CA
    try:
        tls.start()
        resp = httpx.post(tls.url + "/login", data={"username": "aud1", "password": PASSWORD},
                          verify=ssl.create_default_context(cafile=str(cert)))
        assert resp.status_code == 303
        header = resp.headers["set-cookie"]
        assert "Secure" in header and "HttpOnly" in header
        assert resp.headers["strict-transport-security"].startswith("max-age=")
    finally:
        tls.stop()


WRONG = "wrong password!"


def _fail(url: str, name: str, password: str = WRONG,
          source: str | None = None) -> int:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=60) as c:
        return c.post(url + "/login", data={"username": name, "password": password}
                      ).status_code


def test_a_concurrent_burst_gets_no_more_password_checks_than_the_limit(site: Site) -> None:
    import concurrent.futures

    name = unique("sv")
    site.add_user(name, "sv")
    try:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(lambda _i: _fail(site.url, name), range(20)))
        checked = count(site, audit_log, audit_log.c.actor == name,
                        audit_log.c.action == "login.failed")
        assert checked <= MAX_PER_NAME, (checked, codes)
        assert codes.count(401) == checked
        assert set(codes) <= {401, 429, 503}
        # The right password after the burst is refused too: the limit was reached.
        assert _fail(site.url, name, PASSWORD) == 429
    finally:
        with site.engine.begin() as conn:
            conn.execute(login_failures.delete())


def test_made_up_names_and_another_address_cannot_lock_out_a_real_account(site: Site) -> None:
    from floorguard.console.throttle import MAX_UNKNOWN_PER_ADDRESS

    name = unique("adm")
    site.add_user(name, "admin")
    try:
        for i in range(MAX_UNKNOWN_PER_ADDRESS):
            assert _fail(site.url, unique(f"nobody{i}")) == 401
        assert _fail(site.url, unique("nobody")) == 429  # the address, for made-up names
        # ... but the real account still signs in from that same address.
        assert _fail(site.url, name, PASSWORD) == 303
        # A stranger at 127.0.0.2 exhausts the account's allowance from there ...
        for _ in range(MAX_PER_NAME):
            assert _fail(site.url, name, source="127.0.0.2") == 401
        assert _fail(site.url, name, PASSWORD, source="127.0.0.2") == 429
        # ... and the real user at 127.0.0.1 is not locked out by it.
        assert _fail(site.url, name, PASSWORD) == 303
    finally:
        with site.engine.begin() as conn:
            conn.execute(login_failures.delete())


def test_an_admin_unlocks_an_account_from_the_command_line(site: Site) -> None:
    name = unique("sv")
    site.add_user(name, "sv")
    for _ in range(MAX_PER_NAME):
        assert _fail(site.url, name) == 401
    assert _fail(site.url, name, PASSWORD) == 429
    res = site.live.cli("user", "unlock", name)
    assert res.returncode == 0, res.stderr
    assert "unlocked" in res.stdout
    assert _fail(site.url, name, PASSWORD) == 303
    assert count(site, audit_log, audit_log.c.action == "user.unlocked",
                 audit_log.c.target == name) == 1
    missing = site.live.cli("user", "unlock", unique("ghost"))
    assert missing.returncode == 1 and "no user" in missing.stderr


def test_password_checks_beyond_the_cap_are_turned_away_quickly() -> None:
    import threading
    import time

    from floorguard.console.throttle import PasswordChecks

    checks = PasswordChecks(limit=2, queue_s=0.05)
    inside = threading.Barrier(3)
    leave = threading.Event()

    def hold() -> None:
        with checks.slot() as got:
            assert got
            inside.wait()
            leave.wait(5)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    inside.wait()
    t0 = time.monotonic()
    with checks.slot() as got:
        assert not got
    assert time.monotonic() - t0 < 1.0
    leave.set()
    for t in holders:
        t.join()
    with checks.slot() as got:
        assert got


def test_half_sent_requests_are_closed_and_one_address_cannot_take_every_socket(
        tmp_path: object) -> None:
    import contextlib
    import socket
    import time
    from pathlib import Path

    live = LiveConsole(Path(str(tmp_path)), env={
        "FLOORGUARD_HEADER_TIMEOUT": "1", "FLOORGUARD_MAX_CONNECTIONS_PER_ADDRESS": "8"})
    socks: list[socket.socket] = []
    try:
        live.start()
        time.sleep(6)  # let the readiness probe's keep-alive connection time out
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", live.port), timeout=5)
            s.sendall(b"GET /healthz HT")
            socks.append(s)
        t0 = time.monotonic()

        def closed(s: socket.socket) -> float:
            with contextlib.suppress(ConnectionResetError):  # aborted: closed all the same
                assert s.recv(100) == b""
            return time.monotonic() - t0

        # Over the cap: closed at once. Within it: closed at the header deadline.
        refused = [closed(s) for s in socks[8:]]
        held = [closed(s) for s in socks[:8]]
        assert max(refused) < 0.5, refused
        assert min(held) > 0.5 and max(held) < 4.0, held
        # A body the console answered without reading (401: no token) is not waited for,
        # however slowly the client keeps trickling it.
        with socket.create_connection(("127.0.0.1", live.port), timeout=0.5) as s:
            s.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000"
                      b"\r\n\r\n{\"events\"")
            reply, gone, t0 = b"", False, time.monotonic()
            while not gone and time.monotonic() - t0 < 8:
                try:
                    chunk = s.recv(4096)
                    reply += chunk
                    gone = not chunk
                except TimeoutError:
                    with contextlib.suppress(OSError):
                        s.sendall(b" ")  # one more body byte every half second
                except OSError:
                    gone = True
        assert reply.startswith(b"HTTP/1.1 401"), reply[:100]
        assert gone and time.monotonic() - t0 < 4, "the connection was kept for the body"
        # Another address is served all along.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as c:
            assert c.get(live.url + "/healthz").status_code == 200
        assert "connection refused" in live.log.read_text()
    finally:
        for s in socks:
            s.close()
        live.stop()


def test_the_same_log_line_is_written_once_per_period_with_a_count() -> None:
    import logging

    from floorguard.console.http_server import RepeatFilter

    now = [0.0]
    f = RepeatFilter(every_s=60, clock=lambda: now[0])

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), None)

    assert f.filter(rec("socket.accept() out of system resource"))
    assert not any(f.filter(rec("socket.accept() out of system resource"))
                   for _ in range(1000))
    assert f.filter(rec("another message"))
    now[0] = 61
    again = rec("socket.accept() out of system resource")
    assert f.filter(again)
    assert "1000 more like this" in again.getMessage()
