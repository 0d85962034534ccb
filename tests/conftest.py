from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rigs.console import LiveConsole
from tests.rigs.postgres import PostgresCluster

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[LiveConsole]:
    """A live console on SQLite with an admin, an SV and an auditor."""
    live = LiveConsole(tmp_path / "console")
    live.workdir.mkdir(parents=True)
    for name, role in (("admin1", "admin"), ("sv1", "sv"), ("aud1", "auditor")):
        live.add_user(name, role)
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster for the whole test session (stopped at the end)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Playwright drives Debian's Chromium (its own browser download is not used)."""
    exe = next((p for p in CHROMIUM_CANDIDATES if Path(p).exists()), None)
    if exe is None:
        raise AssertionError("Chromium not found: install the Debian package 'chromium'")
    return {**browser_type_launch_args, "executable_path": exe,
            "args": ["--no-sandbox", "--headless", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run"]}
