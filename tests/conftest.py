from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveConsole


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
