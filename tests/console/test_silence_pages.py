"""One definition of "silent": the Floor, Coverage and Agents pages agree about the same
agent on either side of the boundary (three of the agent's own heartbeat intervals), and
about an agent that said it was stopping. Against a live console on both stores."""

from __future__ import annotations

import re

from floorguard.console.presence import heartbeat
from floorguard.console.store.db import now_us
from tests.console.kit import Site, unique

S = 1_000_000


def test_the_boundary_itself_is_still_online() -> None:
    from floorguard.console.presence import (
        NEVER_SEEN,
        ONLINE,
        SILENT,
        STOPPED,
        is_silent,
        liveness,
    )

    at = 1_800_000_000 * S
    assert liveness(now_us=at + 30 * S, heard_us=at, interval_s=10, stopped=False) == ONLINE
    assert liveness(now_us=at + 30 * S + 1, heard_us=at, interval_s=10,
                    stopped=False) == SILENT
    assert liveness(now_us=at + 99 * S, heard_us=at, interval_s=10, stopped=True) == STOPPED
    assert liveness(now_us=at, heard_us=None, interval_s=10, stopped=False) == NEVER_SEEN
    assert is_silent(NEVER_SEEN) and is_silent(SILENT)
    assert not is_silent(STOPPED) and not is_silent(ONLINE)


def pages(site: Site) -> dict[str, str]:
    client = site.login("admin1")
    try:
        out = {}
        for path in ("/floor", "/coverage", "/agents"):
            resp = client.get(path)
            assert resp.status_code == 200, resp.text[:300]
            out[path] = resp.text
        return out
    finally:
        client.close()


def seen_as(html: dict[str, str], agent: str) -> dict[str, str]:
    """How each page shows the agent, in one vocabulary: silent, stopped or online."""
    tile = re.search(rf'data-agent="{agent}" data-state="([a-z]+)"', html["/floor"])
    row = re.search(rf'<tr data-agent="{agent}" class="([a-z]*)"', html["/coverage"])
    line = re.search(rf'<tr class="agent-([a-z-]+)" data-agent="{agent}"', html["/agents"])
    assert tile and row and line, agent
    floor = tile.group(1) if tile.group(1) in ("silent", "stopped") else "online"
    # the Coverage page lists silent agents; a stopped one is not silent there
    coverage = "silent" if row.group(1) == "silent" else None
    agents = line.group(1)
    return {"floor": floor, "coverage": coverage or ("stopped" if agents == "stopped"
                                                     else "online"), "agents": agents}


def test_floor_coverage_and_agents_pages_agree_on_silence(site: Site) -> None:
    floor = unique("F")
    # the agents heartbeat every 10 s (their floor's default would be 30 s)
    fresh, quiet, stopped = (site.seat(floor, s) for s in ("S-01", "S-02", "S-03"))
    now = now_us()
    with site.engine.begin() as conn:
        heartbeat(conn, fresh.agent_id, "running", {"interval": 10}, now - 25 * S)
        heartbeat(conn, quiet.agent_id, "running", {"interval": 10}, now - 35 * S)
        heartbeat(conn, stopped.agent_id, "running", {"interval": 10}, now - 101 * S)
        heartbeat(conn, stopped.agent_id, "stopping", {"interval": 10}, now - 100 * S)
    html = pages(site)
    seen = {name: seen_as(html, seat.agent_id) for name, seat in (
        ("fresh", fresh), ("quiet", quiet), ("stopped", stopped))}
    # the pages agree about each agent...
    assert {name: len(set(views.values())) for name, views in seen.items()} == {
        "fresh": 1, "quiet": 1, "stopped": 1}, seen
    # ...and judge it by its own interval: 3 x 10 s
    assert {name: views["agents"] for name, views in seen.items()} == {
        "fresh": "online", "quiet": "silent", "stopped": "stopped"}
