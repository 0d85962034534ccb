"""The console suite runs against both stores: every test that takes ``site`` runs once on
SQLite and once on a private PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from floorguard.console.store.db import open_store
from tests.console.kit import Site
from tests.rigs.console import LiveConsole

BACKENDS = ("sqlite", "postgresql")
USERS = (("admin1", "admin"), ("sv1", "sv"), ("sv2", "sv"), ("aud1", "auditor"))


@pytest.fixture(scope="session", params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    """One live console per backend for the session, with admin1, sv1, sv2 and aud1."""
    workdir = tmp_path_factory.mktemp(f"console-{request.param}")
    if request.param == "postgresql":
        db_url = request.getfixturevalue("pg_cluster").new_database()
    else:
        db_url = f"sqlite:///{workdir}/console.db"
    engine = open_store(db_url)
    live = LiveConsole(workdir, db_url=db_url)
    s = Site(request.param, db_url, engine, live)
    for name, role in USERS:
        s.add_user(name, role)
    try:
        live.start()
        yield s
    finally:
        live.stop()
        engine.dispose()
