"""The console in a real browser (Playwright driving Debian's Chromium): sign in, watch a
seat change on the floor view without reload, filter violations, switch to Japanese and
back, acknowledge a violation; an auditor gets no acknowledge control and the same POST
sent straight to the server is refused. The screenshots in docs/screenshots/ come from
here: a test run writes them to build/screenshots/ (so it leaves the tree clean), and
``scripts/screenshots.sh`` refreshes the committed ones on purpose."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from floorguard.console.store.db import open_store
from tests.console.conftest import BACKENDS
from tests.console.kit import Site, unique
from tests.rigs.console import LiveConsole
from tests.rigs.processes import PASSWORD, REPO

# FLOORGUARD_SCREENSHOTS is set by scripts/screenshots.sh to refresh docs/screenshots/.
SHOTS = Path(os.environ.get("FLOORGUARD_SCREENSHOTS") or REPO / "build" / "screenshots")


def sign_in(page: Page, url: str, name: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/floor$"))


def test_sv_watches_the_floor_live_filters_acknowledges_and_switches_language(
        site: Site, page: Page) -> None:
    floor = unique("web")
    seat = site.seat(floor, "B-07")
    seat.event("agent.started", user="yamada")
    sign_in(page, site.url, "sv1")
    tile = page.locator(f'li.tile[data-agent="{seat.agent_id}"]')
    expect(tile).to_have_attribute("data-state", "ok")
    page.wait_for_function("document.body.dataset.live === 'yes'")
    page.evaluate("window.__sameDocument = true")
    started = time.monotonic()
    rec = seat.event("usb.blocked", "violation", user="yamada", details={"device": "0781:5567"})
    expect(tile).to_have_attribute("data-state", "violation", timeout=4500)
    took = time.monotonic() - started
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    expect(tile).to_contain_text("USB device blocked")
    print(f"tile updated {took:.3f}s after the event was posted")
    # A seat enrolled after the page loaded appears too.
    newcomer = site.seat(floor, "B-08")
    newcomer.event("idle.warned", "warning", user="kimura")
    expect(page.locator(f'li.tile[data-agent="{newcomer.agent_id}"]')).to_have_attribute(
        "data-state", "idle")

    # Filter violations by seat and kind.
    page.click("nav >> text=Violations")
    page.fill("input[name=seat]", "B-07")
    page.select_option("select[name=kind]", "usb.blocked")
    page.click("#violation-filters button[type=submit]")
    rows = page.locator("table.violations tbody tr[data-agent]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-seq", str(rec["seq"]))
    page.select_option("select[name=kind]", "idle.warned")
    page.click("#violation-filters button[type=submit]")
    expect(rows).to_have_count(0)
    page.go_back()

    # Japanese and back.
    page.select_option("#lang-select", "ja")
    page.click("#lang-apply")
    expect(page.locator("h1")).to_have_text("違反")
    expect(page.locator('select[name=kind] option[value="usb.blocked"]')).to_have_text(
        "USB機器をブロック")
    expect(rows).to_have_count(1)  # the same filtered list, now in Japanese
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    page.select_option("#lang-select", "en")
    page.click("#lang-apply")
    expect(page.locator("h1")).to_have_text("Violations")

    # Acknowledge it.
    page.goto(f"{site.url}/violations/{seat.agent_id}/{rec['seq']}")
    expect(page.locator("dd.chain")).to_contain_text(rec["hash"])
    page.fill("textarea[name=comment]", "USB stick handed to the SV, operator briefed")
    page.click("form.ack button[type=submit]")
    expect(page.locator("ul.acks")).to_contain_text("operator briefed")
    expect(page.locator("ul.acks")).to_contain_text("sv1")


def test_auditor_sees_no_acknowledge_control_and_the_post_is_refused(
        site: Site, page: Page) -> None:
    seat = site.seat(unique("audweb"), "C-01")
    rec = seat.event("processes.killed", "violation", user="ono", details={"name": "obs"})
    sign_in(page, site.url, "aud1")
    expect(page.locator("form.duty")).to_have_count(0)
    page.goto(f"{site.url}/violations/{seat.agent_id}/{rec['seq']}")
    expect(page.locator("dl.event")).to_contain_text("obs")
    expect(page.locator("form.ack")).to_have_count(0)
    expect(page.locator("textarea")).to_have_count(0)
    csrf = page.locator("form.logout input[name=csrf]").get_attribute("value")
    assert csrf
    # The same actions an SV has, sent straight to the server with the auditor's session.
    for path, form in ((f"/violations/{seat.agent_id}/{rec['seq']}/ack", {"comment": "ok"}),
                       ("/duty", {"action": "on", "floor": "x"})):
        resp = page.request.post(site.url + path, form={**form, "csrf": csrf},
                                 headers={"Origin": site.url}, max_redirects=0)
        assert resp.status == 403, (path, resp.status)
    page.goto(f"{site.url}/violations/{seat.agent_id}/{rec['seq']}")
    expect(page.locator("ul.acks li.none")).to_have_count(1)


@pytest.fixture(params=BACKENDS)
def showcase(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveConsole]:
    """A fresh console with one tidy floor, for the README's screenshots."""
    if request.param == "postgresql":
        db_url = request.getfixturevalue("pg_cluster").new_database()
    else:
        db_url = f"sqlite:///{tmp_path}/shots.db"
    engine = open_store(db_url)
    live = LiveConsole(tmp_path, db_url=db_url)
    s = Site(request.param, db_url, engine, live)
    for name, role in (("sato.sv", "sv"), ("ito.sv", "sv")):
        s.add_user(name, role)
    try:
        live.start()
        operators = ["tanaka", "suzuki", "takahashi", "watanabe", "ito", "yamamoto", "nakamura",
                     "kobayashi", "kato", "yoshida", "yamada", "sasaki", "matsumoto", "inoue"]
        plan = {2: ("usb.blocked", "violation", {"device": "0781:5567", "class": "08"}),
                5: ("idle.warned", "warning", {"idle_seconds": 240}),
                9: ("processes.killed", "violation", {"name": "obs", "pid": 4242}),
                11: ("idle.locked", "info", {})}
        for i, op in enumerate(operators):
            seat = s.seat("3F north", f"N-{i + 1:02d}", staff=("sato.sv", "ito.sv"))
            seat.event("agent.started", user=op)
            if i in plan:
                kind, sev, details = plan[i]
                seat.event(kind, sev, user=op, details=details)
            if i == 13:
                s.set_last_seen(seat, int((time.time() - 600) * 1_000_000))
        with engine.begin() as conn:
            from floorguard.console.store.schema import floor_settings

            conn.execute(floor_settings.insert().values(floor="3F north", max_operators_per_sv=10,
                                                        timezone="Asia/Tokyo"))
        yield live
    finally:
        live.stop()
        engine.dispose()


def test_screenshots_of_the_floor_and_violations_in_english_and_japanese(
        showcase: LiveConsole, page: Page) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1200, "height": 700})
    page.goto(showcase.url + "/login")
    page.fill("input[name=username]", "sato.sv")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.click("form.duty button[type=submit]")
    expect(page.locator("form.duty .on-duty")).to_be_visible()
    for lang in ("en", "ja"):
        page.select_option("#lang-select", lang)
        page.click("#lang-apply")
        page.goto(showcase.url + "/floor")
        expect(page.locator("li.tile")).to_have_count(14)
        expect(page.locator('li.tile[data-state="silent"]')).to_have_count(1)
        page.screenshot(path=str(SHOTS / f"floor-{lang}.png"), full_page=True)
        page.goto(showcase.url + "/violations")
        expect(page.locator("table.violations tbody tr[data-agent]")).to_have_count(2)
        page.screenshot(path=str(SHOTS / f"violations-{lang}.png"), full_page=True)
    for lang in ("en", "ja"):
        assert (SHOTS / f"floor-{lang}.png").stat().st_size > 10_000
