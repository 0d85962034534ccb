"""In a real browser (Debian's Chromium): the SV sees the held page and approves it.

The browser is pytest-playwright's ``page``, launched with Debian's Chromium by the
settings in tests/conftest.py (one Playwright per test session).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from floorguard.agent.adapters.cups import COMPLETED
from tests.controls.print.conftest import job_state
from tests.rigs.console import LiveConsole
from tests.rigs.cupsd import Cupsd, printed
from tests.rigs.processes import PASSWORD, wait_until


def test_an_sv_sees_the_thumbnail_approves_and_the_job_prints(
        page: Any, floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf3: Path) -> None:
    f = floor()
    f.start()
    job = cupsd.submit(f.queue, pdf3, user="alice", title="Browser approval")
    f.wait_console_state(print_console.login("sv1"), job, "held")

    page.goto(print_console.url + "/login")
    page.fill("input[name=username]", "sv1")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(print_console.url + "/print")
    row = page.locator(f'tr.print-job[data-agent="{f.agent_id}"][data-job="{job}"]')
    assert row.count() == 1
    assert "Browser approval" in row.inner_text() and "alice" in row.inner_text()
    assert row.locator("td.pages").inner_text().strip() == "3"
    img = row.locator("td.thumb img")
    wait_until(lambda: img.evaluate("i => i.complete && i.naturalWidth > 0"), 10, 0.05,
               "the thumbnail to load")
    assert img.evaluate("i => i.naturalWidth") > 20

    row.locator("form.approve button").click()
    page.wait_for_url("**/print")
    f.wait_for("print.released", job_id=job)
    assert job_state(cupsd, job) == COMPLETED and printed(f.out)

    def shown_released() -> bool:
        page.reload()
        done = page.locator(f'table.print-recent tr[data-agent="{f.agent_id}"]'
                            f'[data-job="{job}"] td.state')
        return done.count() == 1 and "released" in done.inner_text()

    wait_until(shown_released, 20, 0.2, "the page to show the job released")
