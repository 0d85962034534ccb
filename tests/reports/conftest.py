from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from floorguard.console.app import create_app
from floorguard.console.db import open_store
from tests.reports import fixture_day


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Engine]:
    engine = open_store(f"sqlite:///{tmp_path}/console.db")
    yield engine
    engine.dispose()


def load_fixture_day(engine: Engine) -> None:
    app = create_app(engine=engine)
    with TestClient(app) as client:
        fixture_day.load(engine, client)
