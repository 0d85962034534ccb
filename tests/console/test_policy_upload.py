"""The console's policy upload refuses hostile policy text with a 4xx naming the line,
as ``floorguard check`` does, and stores nothing from it."""

from __future__ import annotations

import re

import sqlalchemy as sa

from floorguard.console.store.schema import audit_log, floor_policies
from tests.console.kit import Site, count, unique
from tests.rigs.processes import REPO

DEEP = REPO / "tests" / "policies" / "bad" / "deep_nesting.toml"


def _csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[:500]
    return m.group(1)


def test_upload_of_5000_nested_brackets_is_a_422_naming_the_line(site: Site) -> None:
    floor = unique("deep")
    admin = site.login("admin1")
    csrf = _csrf(admin.get("/policies").text)
    page = admin.post("/policies", data={"csrf": csrf, "floor": floor},
                      files={"file": ("deep.toml", DEEP.read_bytes(), "text/plain")})
    assert page.status_code == 422, page.text[:500]
    assert "deep.toml:6: brackets or braces nested more than 32 deep" in page.text
    pasted = admin.post("/policies", data={"csrf": csrf, "floor": floor,
                                           "text": "[usb]\nallow = " + "{a = " * 5000})
    assert pasted.status_code == 422, pasted.text[:500]
    assert f"{floor}.toml:2: brackets or braces nested more than 32 deep" in pasted.text
    assert count(site, floor_policies, floor_policies.c.floor == floor) == 0
    refused = site.rows(sa.select(audit_log.c.action).where(audit_log.c.target == floor))
    assert [r.action for r in refused] == ["policy.refused", "policy.refused"]
