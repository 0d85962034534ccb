"""Which agents are alive: heartbeats in, ``agent.silent`` / ``agent.recovered`` out.

An agent heartbeats every ``[agent] heartbeat_interval`` of its policy and says so in each
heartbeat. What "silent" means is decided here, by ``liveness``, and nowhere else: the
Floor, Coverage and Agents pages and the silence watch all call it. An agent is

- ``stopped`` when it said it was stopping and has not heartbeated since (a deliberate
  stop is recorded in the audit trail and by the agent's own ``agent.stopped``; it is not a
  silence);
- ``never seen`` when the console has never heard from it;
- ``silent`` when it was last heard (a heartbeat or a batch of events,
  ``agents.last_seen_us``) more than ``MISSED`` (3) of its heartbeat intervals ago;
- ``online`` otherwise.

Its heartbeat interval is the one it reports in its heartbeats, or, before its first
heartbeat, its floor's ``[agent] heartbeat_interval``. A silent agent that has heartbeated
gets one ``agent.silent`` violation; its next heartbeat records ``agent.recovered``. The
periodic check runs in every console process; the conditional update on ``silent_us``
makes each silence recorded once however many run it.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from floorguard.console.console_events import record_console_event
from floorguard.console.ingest.chain import link_row
from floorguard.console.store.schema import agent_link, agents
from floorguard.events import rfc3339

log = structlog.get_logger("floorguard.console.presence")

MISSED = 3

ONLINE, SILENT, STOPPED, NEVER_SEEN = "online", "silent", "stopped", "never seen"


def silent_after_us(interval_s: float) -> int:
    """How long an agent with this heartbeat interval may go unheard."""
    return int(MISSED * interval_s * 1_000_000)


def interval_of(heartbeat_us: int | None, reported_s: float | None,
                floor_interval_s: float) -> float:
    """The agent's heartbeat interval: the one it reported (``agent_link.interval_s``)
    once it has heartbeated, else its floor's."""
    if heartbeat_us is not None and reported_s:
        return float(reported_s)
    return float(floor_interval_s)


def liveness(*, now_us: int, heard_us: int | None, interval_s: float,
             stopped: bool) -> str:
    """The one definition of an agent being online, silent, stopped or never seen (see
    the module docstring). Pure; the boundary itself (exactly ``MISSED`` intervals) is
    still online."""
    if stopped:
        return STOPPED
    if heard_us is None:
        return NEVER_SEEN
    if now_us - heard_us > silent_after_us(interval_s):
        return SILENT
    return ONLINE


def is_silent(state: str) -> bool:
    """Whether a ``liveness`` state counts as silent on the pages (never heard is)."""
    return state in (SILENT, NEVER_SEEN)


def heartbeat(conn: Connection, agent_id: str, state: str, status: dict[str, Any],
              now_us: int) -> dict[str, Any]:
    """Store one heartbeat; returns what changed (``recovered``, ``stopping``) and the
    agent's ``floor`` with the ``policy_hash`` the console holds for it (or None).

    Three statements in the common case: this runs a thousand times a minute."""
    from floorguard.console.store.schema import floor_policies

    row = conn.execute(
        sa.select(agents.c.floor, agents.c.seat, agent_link.c.agent.label("linked"),
                  agent_link.c.silent_us, floor_policies.c.hash)
        .select_from(agents.outerjoin(agent_link, agent_link.c.agent == agents.c.id)
                     .outerjoin(floor_policies, floor_policies.c.floor == agents.c.floor))
        .where(agents.c.id == agent_id)).one()
    interval = status.get("interval", 30.0)
    interval = min(max(float(interval), 1.0), 3600.0) if isinstance(
        interval, int | float) else 30.0
    conn.execute(agents.update().where(agents.c.id == agent_id).values(
        status={**status, "state": state}, version=str(status.get("version") or "")[:64],
        policy=str(status.get("policy") or "")[:64], last_seen_us=now_us))
    values: dict[str, Any] = {"heartbeat_us": now_us, "interval_s": interval, "state": state,
                              "stopped_us": now_us if state == "stopping" else None}
    out: dict[str, Any] = {"recovered": False, "stopping": state == "stopping",
                           "floor": str(row.floor), "policy_hash": row.hash}
    if row.linked is None:
        link_row(conn, agent_id)
    conn.execute(agent_link.update().where(agent_link.c.agent == agent_id).values(**values))
    # A heartbeat counts towards the hours the daily report says the agent was heard.
    from floorguard.console.reports.rollup import note_heartbeats

    note_heartbeats(conn, agent_id, [now_us], floor=str(row.floor))
    if row.silent_us is not None:
        cleared = conn.execute(agent_link.update().where(
            agent_link.c.agent == agent_id, agent_link.c.silent_us.is_not(None))
            .values(silent_us=None))
        if cleared.rowcount:
            record_console_event(conn, "agent.recovered", "info", {
                "agent": agent_id, "silent_since": rfc3339(row.silent_us / 1e6),
                "silent_for_s": round((now_us - row.silent_us) / 1e6, 3),
                "state": state}, seat=str(row.seat), now=now_us / 1e6)
            out["recovered"] = True
    return out


def check_silent(conn: Connection, now_us: int) -> list[str]:
    """Record ``agent.silent`` for every enrolled agent that has heartbeated and that
    ``liveness`` finds silent; returns the agents newly found silent."""
    rows = conn.execute(
        sa.select(agent_link.c.agent, agent_link.c.heartbeat_us, agent_link.c.interval_s,
                  agents.c.last_seen_us, agents.c.seat, agents.c.host)
        .join(agents, agents.c.id == agent_link.c.agent)
        .where(agents.c.revoked_us.is_(None), agent_link.c.silent_us.is_(None),
               agent_link.c.stopped_us.is_(None), agent_link.c.heartbeat_us.is_not(None),
               # a cheap pre-filter (no interval is under one second); liveness decides
               agents.c.last_seen_us < now_us - silent_after_us(1.0))).all()
    found = []
    for r in rows:
        # every candidate has heartbeated, so its own interval is known
        interval = interval_of(r.heartbeat_us, r.interval_s, r.interval_s)
        if liveness(now_us=now_us, heard_us=r.last_seen_us, interval_s=interval,
                    stopped=False) != SILENT:
            continue
        heard_since = sa.select(agents.c.id).where(agents.c.id == r.agent,
                                                   agents.c.last_seen_us == r.last_seen_us)
        took = conn.execute(agent_link.update().where(
            agent_link.c.agent == r.agent, agent_link.c.silent_us.is_(None),
            agent_link.c.stopped_us.is_(None), sa.exists(heard_since))
            .values(silent_us=now_us))
        if not took.rowcount:
            continue  # another console process got there first, or it was just heard
        record_console_event(conn, "agent.silent", "violation", {
            "agent": r.agent, "host": r.host, "last_seen": rfc3339(r.last_seen_us / 1e6),
            "interval_s": interval, "missed": MISSED}, seat=r.seat, now=now_us / 1e6)
        found.append(str(r.agent))
    return found


Work = Callable[[Connection], Any]


class WriteSink:
    """Group commit for small writes (heartbeats): one thread takes every write waiting
    and runs them in one transaction.

    On SQLite, writers in separate transactions queue on the database lock with a
    sleeping busy handler, so a thousand agents heartbeating through their own
    transactions spend their time asleep; batched, they cost one commit per batch.
    A batch that fails is retried one write at a time, so one bad write fails alone.
    """

    def __init__(self, engine: Engine, max_batch: int = 500):
        self.engine = engine
        self.max_batch = max_batch
        self._q: queue.Queue[tuple[Work, Future[Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="write-sink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(10)
            self._thread = None

    def submit(self, work: Work) -> Future[Any]:
        fut: Future[Any] = Future()
        if self._thread is None:
            fut.set_exception(RuntimeError("the console is not running"))
        else:
            self._q.put((work, fut))
        return fut

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Work, Future[Any]]]) -> None:
        try:
            with self.engine.begin() as conn:
                results = [work(conn) for work, _fut in batch]
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for item in batch:
                self._commit([item])
            return
        for (_work, fut), result in zip(batch, results, strict=True):
            fut.set_result(result)


class SilenceWatch:
    """Runs ``check_silent`` every ``every`` seconds on a background scheduler."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time,
                 every: float | None = None):
        self.engine = engine
        self.clock = clock
        self.every = every or float(os.environ.get("FLOORGUARD_SILENCE_CHECK", "5"))
        self._scheduler: Any = None

    def run_once(self) -> list[str]:
        try:
            with self.engine.begin() as conn:
                found = check_silent(conn, int(self.clock() * 1_000_000))
        except Exception:  # the job must keep running through a busy store
            log.exception("silence check failed")
            return []
        for agent in found:
            log.warning("agent silent", agent=agent)
        return found

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(daemon=True)
        self._scheduler.add_job(self.run_once, "interval", seconds=self.every,
                                id="silence", max_instances=1, coalesce=True)
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
