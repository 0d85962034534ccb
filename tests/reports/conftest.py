from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from floorguard.console.app import create_app
from floorguard.console.store.db import make_engine, open_store
from tests.reports import fixture_day
from tests.rigs.postgres import PostgresCluster


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PostgresCluster) -> str:
    """The suite's one private PostgreSQL cluster (tests/rigs/postgres.py)."""
    return pg_cluster.url()


def _fresh_pg(url: str, name: str) -> str:
    admin = make_engine(url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def load_fixture_day(engine: Engine) -> None:
    """The fixture day, ingested through the console's real API."""
    app = create_app(engine=engine)
    with TestClient(app) as client:
        fixture_day.load(engine, client)


@pytest.fixture(scope="session")
def fixture_stores(pg_url: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[dict[str, Engine]]:
    """The fixture day loaded once into SQLite and once into PostgreSQL."""
    path = tmp_path_factory.mktemp("sqlite") / "console.db"
    stores = {"sqlite": open_store(f"sqlite:///{path}"),
              "postgresql": open_store(_fresh_pg(pg_url, "fixture_day"))}
    for engine in stores.values():
        load_fixture_day(engine)
    yield stores
    for engine in stores.values():
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, fixture_stores: dict[str, Engine]) -> Engine:
    return fixture_stores[request.param]


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[Engine]:
    engine = open_store(f"sqlite:///{tmp_path}/console.db")
    yield engine
    engine.dispose()


@pytest.fixture
def empty_pg(pg_url: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    engine = open_store(_fresh_pg(pg_url, name))
    yield engine
    engine.dispose()
