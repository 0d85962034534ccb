"""The store: migrations reach every head on both backends, and the queries the pages run
walk an index in page order rather than scanning or sorting the events table (which is
what keeps them fast at 10 million events; bench/console_*.py measures it)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import floorguard.console
from floorguard.console.ingest.pipeline import ts_to_us
from floorguard.console.store import db, schema
from floorguard.console.store.db import open_store
from floorguard.console.violations import Filters, list_events
from tests.console.kit import Site, unique

# Each filter of the violations page and the index that serves it in page order.
FILTERS = [(Filters(), "events_sev_ts_key"), (Filters(day="2026-11-28"), "events_sev_ts_key"),
           (Filters(seat="A-01"), "events_seat_sev_ts"),
           (Filters(operator="tanaka"), "events_user_sev_ts"),
           (Filters(kind="usb.blocked", severity=""), "events_kind_ts"),
           (Filters(control="usb"), "events_control_sev_ts"),
           # at any severity, one walk per severity of the filter's index, merged
           (Filters(severity=""), "events_sev_ts_key"),
           (Filters(day="2026-11-28", severity=""), "events_sev_ts_key"),
           (Filters(seat="A-01", severity=""), "events_seat_sev_ts"),
           (Filters(operator="tanaka", severity=""), "events_user_sev_ts"),
           (Filters(control="usb", severity=""), "events_control_sev_ts")]


def _plan(site: Site, f: Filters, after: tuple[int, str, int] | None) -> str:
    captured: list[str] = []
    with site.engine.connect() as conn:
        def capture(conn_: object, cursor: object, statement: str, params: object,
                    context: object, many: bool) -> None:
            captured.append(statement)

        sa.event.listen(conn, "before_cursor_execute", capture)
        list_events(conn, f, "Asia/Tokyo", after, 51)
        sa.event.remove(conn, "before_cursor_execute", capture)
        stmt = captured[-1]
        params = _params(conn, f, after)
        if site.backend == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt, params).all()
            return "\n".join(str(r[-1]) for r in rows)
        # An empty test table makes every plan cheap: forbid scans, bitmaps and sorts, so
        # the plan is an ordered index walk if one exists (and a sort if none does).
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            conn.exec_driver_sql(f"SET {setting} = off")
        rows = conn.exec_driver_sql("EXPLAIN " + stmt, params).all()
        conn.exec_driver_sql("RESET ALL")  # the pooled connection goes back as it came
        return "\n".join(str(r[0]) for r in rows)


def _params(conn: sa.Connection, f: Filters, after: tuple[int, str, int] | None) -> object:
    captured: list[object] = []

    def capture(conn_: object, cursor: object, statement: str, params: object,
                context: object, many: bool) -> None:
        captured.append(params)

    sa.event.listen(conn, "before_cursor_execute", capture)
    list_events(conn, f, "Asia/Tokyo", after, 51)
    sa.event.remove(conn, "before_cursor_execute", capture)
    return captured[-1]


def test_migrations_created_the_console_tables_and_indexes(site: Site) -> None:
    insp = sa.inspect(site.engine)
    tables = set(insp.get_table_names())
    assert {"seat_state", "violation_acks", "login_failures", "sv_duty", "floor_settings",
            "floor_ratio_state"} <= tables
    names = {i["name"] for i in insp.get_indexes("events")}
    assert {"events_sev_ts_key", "events_seat_sev_ts", "events_user_sev_ts",
            "events_kind_ts", "events_control_sev_ts"} <= names


def test_indexes_that_another_one_covers_are_gone(site: Site) -> None:
    # (seat, ts_us) and (ts_us, agent, seq) are served by the merged per-severity walks,
    # (kind, ts_us) by events_kind_ts; each index on events is written for every event.
    names = {i["name"] for i in sa.inspect(site.engine).get_indexes("events")}
    assert not {"events_seat_ts", "events_ts_key", "reports_events_kind_ts"} & names


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_index_drops_go_down_and_up_again(backend: str, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    url = (request.getfixturevalue("pg_cluster").new_database() if backend == "postgresql"
           else f"sqlite:///{tmp_path}/console.db")
    engine = open_store(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "console_0001")  # and what was chained on console_0002
            command.downgrade(cfg, "reports_0002@-1")
        names = {i["name"] for i in sa.inspect(engine).get_indexes("events")}
        assert {"events_seat_ts", "events_ts_key", "reports_events_kind_ts"} <= names
        engine.dispose()
        engine = open_store(url)  # what a console start does: every head again
        names = {i["name"] for i in sa.inspect(engine).get_indexes("events")}
        assert not {"events_seat_ts", "events_ts_key", "reports_events_kind_ts"} & names
    finally:
        engine.dispose()


def test_a_seat_at_any_severity_lists_every_event_newest_first_page_by_page(
        site: Site) -> None:
    floor, name = unique("floor"), unique("S")
    seat = site.seat(floor, name)
    other = site.seat(floor, unique("S"))
    base = 1_760_000_000.0  # in the past: ingest refuses records a day ahead
    recs = [seat.record(kind, sev, user="tanaka", ts=base + i // 2)  # ties on ts_us
            for i, (kind, sev) in enumerate([("usb.allowed", "info"),
                                             ("usb.blocked", "violation"),
                                             ("idle.warned", "warning")] * 5)]
    seat.post(*recs)
    other.post(other.record("usb.blocked", "violation", ts=base + 3))
    want = sorted(((ts_to_us(r["ts"]), seat.agent_id, r["seq"]) for r in recs),
                  reverse=True)
    got: list[tuple[int, str, int]] = []
    after = None
    with site.engine.connect() as conn:
        while True:
            page = list_events(conn, Filters(seat=name, severity=""), "Asia/Tokyo", after, 4)
            got += [(r.ts_us, r.agent, r.seq) for r in page]
            if len(page) < 4:
                break
            after = got[-1]
    assert got == want


def test_violation_list_queries_walk_an_index(site: Site) -> None:
    for f, index in FILTERS:
        for after in (None, (1_764_000_000_000_000, "z" * 36, 10)):
            plan = _plan(site, f, after)
            if site.backend == "sqlite":
                assert index in plan, (f, plan)
                # At most the ties of one ts_us are sorted, never the matches; merged
                # walks sort only the page each one read (SQLite does not carry a
                # subquery's order into the merge).
                lines = plan.splitlines()
                assert all(lines[i - 1].startswith("SCAN anon_") for i, line in
                           enumerate(lines) if "TEMP B-TREE FOR ORDER BY" in line), (f, plan)
            else:
                assert "Index Scan" in plan, (f, plan)
                if not f.severity and not f.kind:
                    assert "Merge Append" in plan, (f, plan)
                nodes = [line.strip().removeprefix("->").strip() for line in
                         plan.splitlines()]
                # A Merge Append names its sort key but sorts nothing.
                assert not any(n.startswith(("Seq Scan", "Sort  (", "Incremental Sort  ("))
                               for n in nodes), (f, plan)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migrations_build_exactly_the_tables_the_code_declares(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One Alembic history, and what it builds is what the code queries: alembic's own
    comparison of the migrated store with the tables every module declares finds
    nothing, on both stores."""
    for mod in pkgutil.walk_packages(floorguard.console.__path__, "floorguard.console."):
        if ".migrations" not in mod.name:
            importlib.import_module(mod.name)  # each module declares its own tables
    url = (request.getfixturevalue("pg_cluster").new_database() if backend == "postgresql"
           else f"sqlite:///{tmp_path}/console.db")
    engine = open_store(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    try:
        heads = ScriptDirectory.from_config(cfg).get_heads()
        assert len(heads) == 1, f"more than one head: {heads}; add a merge migration"
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert ctx.get_current_heads() == tuple(heads)
            assert compare_metadata(ctx, schema.metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_commands_waiting_under_their_old_names_are_renamed(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (request.getfixturevalue("pg_cluster").new_database() if backend == "postgresql"
           else f"sqlite:///{tmp_path}/console.db")
    engine = open_store(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003_one_history")
            for name in ("lock_seat", "reload_policy", "print.decide"):
                conn.execute(sa.text(
                    "INSERT INTO commands (agent, name, args, created_by, created_us, state) "
                    "VALUES ('a1', :n, '{}', 'sv1', 1, 'queued')"), {"n": name})
        engine.dispose()
        engine = open_store(url)  # a console start migrates to the head
        with engine.connect() as conn:
            names = sorted(r[0] for r in conn.execute(sa.text("SELECT name FROM commands")))
        assert names == ["agent.reload_policy", "idle.lock_seat", "print.decide"]
    finally:
        engine.dispose()
