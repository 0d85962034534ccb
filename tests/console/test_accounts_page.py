"""The admin's accounts page: floors set in the web UI scope the SV at once, the change
is audited, and only admins may make it."""

from __future__ import annotations

import re

import sqlalchemy as sa

from floorguard.console.store.schema import audit_log
from tests.console.kit import Site, unique


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def test_an_admin_sets_an_svs_floors_in_the_web_ui_and_the_sv_sees_only_those(
        site: Site) -> None:
    mine = site.seat(unique("F"), unique("mine"), staff=())
    other = site.seat(unique("F"), unique("other"), staff=())
    sv = unique("sv")
    site.add_user(sv, "sv")
    admin = site.login("admin1")
    page = admin.get("/admin/accounts")
    assert page.status_code == 200 and f'data-account="{sv}"' in page.text
    resp = admin.post(f"/admin/accounts/{sv}/floors",
                      data={"csrf": _csrf(page.text), "floors": f" {mine.floor} ,"})
    assert resp.status_code == 303
    assert mine.floor in admin.get("/admin/accounts").text
    tiles = site.login(sv).get("/floor/tiles").text
    assert mine.seat in tiles and other.seat not in tiles
    with site.engine.connect() as conn:
        row = conn.execute(sa.select(audit_log).where(
            audit_log.c.action == "user.floors_set", audit_log.c.target == sv)).first()
    assert row is not None and row.actor == "admin1"


def test_a_bad_floor_name_is_a_clear_422_and_changes_nothing(site: Site) -> None:
    sv = unique("sv")
    site.add_user(sv, "sv")
    admin = site.login("admin1")
    csrf = _csrf(admin.get("/admin/accounts").text)
    resp = admin.post(f"/admin/accounts/{sv}/floors",
                      data={"csrf": csrf, "floors": "3F\x01north"})
    assert resp.status_code == 422 and "floors:" in resp.text
    resp = admin.post("/admin/accounts/no-such-account/floors",
                      data={"csrf": csrf, "floors": "3F"})
    assert resp.status_code == 404


def test_an_sv_cannot_open_or_change_the_accounts_page(site: Site) -> None:
    sv = site.login("sv1")
    assert sv.get("/admin/accounts").status_code == 403
    csrf = _csrf(sv.get("/floor").text)
    assert sv.post("/admin/accounts/sv1/floors",
                   data={"csrf": csrf, "floors": "anything"}).status_code == 403
