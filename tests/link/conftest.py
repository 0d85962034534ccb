"""Fixtures for the link tests: a live console with fast silence checks, agents enrolled
with it, and direct (read) access to the console's store for assertions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.rigs.agent import AgentProcess
from tests.rigs.console import LiveConsole
from tests.rigs.postgres import PostgresCluster

POLICY = """\
[floor]
name = "3F north"

[agent]
heartbeat_interval = "1s"
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


class Store:
    """Read the console's database the way an auditor's query would."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]

    def events(self, agent: str | None = None, kind: str | None = None
               ) -> list[dict[str, Any]]:
        import json

        sql = "SELECT * FROM events WHERE 1=1"
        params: dict[str, Any] = {}
        if agent:
            sql += " AND agent = :agent"
            params["agent"] = agent
        if kind:
            sql += " AND kind = :kind"
            params["kind"] = kind
        out = self.rows(sql + " ORDER BY agent, seq", **params)
        for r in out:
            if isinstance(r["details"], str):
                r["details"] = json.loads(r["details"])
        return out

    def console_events(self, kind: str) -> list[dict[str, Any]]:
        return self.events("console", kind)

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def link_console(tmp_path: Path) -> Iterator[LiveConsole]:
    """A live console checking for silent agents every 0.3 s, with admin1/sv1/aud1."""
    live = LiveConsole(tmp_path / "console", env={"FLOORGUARD_SILENCE_CHECK": "0.3"})
    live.workdir.mkdir(parents=True)
    for name, role in (("admin1", "admin"), ("sv1", "sv"), ("aud1", "auditor")):
        live.add_user(name, role)
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def store(link_console: LiveConsole) -> Iterator[Store]:
    s = Store(link_console.db_url)
    yield s
    s.close()


def enrolled_agent(tmp_path: Path, console: LiveConsole, policy: Path, name: str = "a",
                   seat: str = "T-01", env: dict[str, str] | None = None) -> AgentProcess:
    agent = AgentProcess(tmp_path / name, policy, console_url=console.url, seat=seat,
                         env=env)
    res = agent.enroll(console.url, console.enroll_code())
    assert res.returncode == 0, res.stderr
    return agent


def agent_id(agent: AgentProcess) -> str:
    return (agent.state_dir / "agent_id").read_text().strip()


def token(agent: AgentProcess) -> str:
    return (agent.state_dir / "token").read_text().strip()


def csrf_of(client: Any, path: str = "/agents") -> str:
    import re

    page = client.get(path)
    assert page.status_code == 200, page.text
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, "no CSRF token on the page"
    return m.group(1)


@pytest.fixture(scope="session")
def postgres(pg_cluster: PostgresCluster) -> str:
    """The suite's one private PostgreSQL cluster, as a server URL without a database
    name."""
    return pg_cluster.url().rsplit("/", 1)[0]
