"""The agent's live channel to the console: heartbeats, commands, central policy.

Three small asyncio classes do the talking and know nothing of the daemon, so the fleet
benchmark runs a thousand of them in one process exactly as each agent runs its own:

- ``ConsoleSession``: the console URL, the agent's bearer token and one HTTP client.
- ``Heartbeat``: posts the agent's state every interval (and ``"stopping"`` once before a
  deliberate stop); hands each reply to a callback.
- ``CommandPoller``: holds ``GET /api/v1/commands?wait=25`` open, runs each command it
  gets, posts the result; a command already run (its id remembered) is acknowledged again
  with the same result rather than run twice.

``Channel`` wires them to the daemon in a thread of its own: status from
``Agent.status()``, the interval from the policy's ``[agent] heartbeat_interval``,
commands through the agent's ``Commands`` registry (each recorded as ``agent.command``),
and the floor policy the console holds applied exactly like a local reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from .. import __version__

if TYPE_CHECKING:
    from .daemon import Agent

log = structlog.get_logger("floorguard.channel")

POLL_WAIT = 25.0
DONE_KEEP = 200
DONE_META = "commands_done"


class NoToken(Exception):
    """The agent is not enrolled yet."""


class ConsoleSession:
    """One agent's authenticated client for the console."""

    def __init__(self, base_url: str, token: Callable[[], str | None], *, verify: Any = True,
                 client: httpx.AsyncClient | None = None, timeout: float = 10.0):
        self.token = token
        self._own = client is None
        self.client = client or httpx.AsyncClient(
            base_url=base_url.rstrip("/"), verify=verify, timeout=timeout,
            headers={"User-Agent": f"floorguard/{__version__}"})
        self.base = "" if client is None else base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        token = self.token()
        if not token:
            raise NoToken("no agent token: run 'floorguard enroll'")
        return {"Authorization": f"Bearer {token}"}

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      params: dict[str, Any] | None = None,
                      timeout: float | None = None) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self._headers(), "params": params}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout is not None:
            kwargs["timeout"] = timeout
        resp = await self.client.request(method, self.base + path, **kwargs)
        if resp.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"console answered {resp.status_code} to {method} {path}: {resp.text[:200]}",
                request=resp.request, response=resp)
        return resp

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))


class Heartbeat:
    """Posts ``status()`` every ``interval()`` seconds."""

    def __init__(self, session: ConsoleSession, status: Callable[[], dict[str, Any]], *,
                 interval: Callable[[], float],
                 on_reply: Callable[[dict[str, Any]], Awaitable[None]] | None = None):
        self.session = session
        self.status = status
        self.interval = interval
        self.on_reply = on_reply
        self.latencies: list[float] = []  # seconds per heartbeat round trip (bench reads)
        self.failures = 0
        self.now = asyncio.Event()  # set to send the next heartbeat at once

    async def beat(self, state: str = "running") -> dict[str, Any]:
        t0 = time.perf_counter()
        resp = await self.session.request("POST", "/api/v1/heartbeat",
                                          json_body={"state": state, "status": self.status()})
        self.latencies.append(time.perf_counter() - t0)
        reply: dict[str, Any] = resp.json()
        return reply

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reply = await self.beat()
                self.failures = 0
                if self.on_reply is not None:
                    await self.on_reply(reply)
            except NoToken:
                pass
            except (httpx.HTTPError, ValueError) as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.info("heartbeat failed", error=f"{type(exc).__name__}: {exc}",
                             failures=self.failures)
            except Exception:  # one bad reply must not end the heartbeats
                log.exception("heartbeat handling failed")
            self.now.clear()
            waiter = asyncio.ensure_future(self.now.wait())
            try:
                await _sleep_or_stop_or(stop, waiter, self.interval())
            finally:
                waiter.cancel()


async def _sleep_or_stop_or(stop: asyncio.Event, other: asyncio.Future[Any],
                            seconds: float) -> None:
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopper, other}, timeout=max(seconds, 0.0),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()


class CommandPoller:
    """Long-polls for commands, runs each through ``execute`` and posts its result."""

    def __init__(self, session: ConsoleSession,
                 execute: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], *,
                 wait: float = POLL_WAIT, done: dict[int, dict[str, Any]] | None = None,
                 on_done: Callable[[dict[int, dict[str, Any]]], None] | None = None):
        self.session = session
        self.execute = execute
        self.wait = wait
        self.done: dict[int, dict[str, Any]] = dict(done or {})
        self.on_done = on_done
        self.failures = 0

    async def poll_once(self) -> int:
        resp = await self.session.request("GET", "/api/v1/commands",
                                          params={"wait": self.wait},
                                          timeout=self.wait + 15)
        cmds = resp.json().get("commands", [])
        for cmd in cmds:
            cid = int(cmd["id"])
            result = self.done.get(cid)
            if result is None:
                try:
                    result = await self.execute(cmd)
                except Exception as exc:  # a failing handler is a failed command, not a crash
                    log.exception("command failed", name=cmd.get("name"))
                    result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                self.done[cid] = result
                while len(self.done) > DONE_KEEP:
                    self.done.pop(min(self.done))
                if self.on_done is not None:
                    self.on_done(self.done)
            await self.session.request("POST", f"/api/v1/commands/{cid}/result",
                                       json_body={"result": result})
        return len(cmds)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.poll_once()
                self.failures = 0
            except NoToken:
                await _sleep_or_stop(stop, 5)
            except (httpx.HTTPError, ValueError) as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.info("command poll failed", error=f"{type(exc).__name__}: {exc}",
                             failures=self.failures)
                await _sleep_or_stop(stop, min(30.0, 0.5 * 2 ** min(self.failures, 6)))


def summarize(value: Any, limit: int = 200) -> Any:
    """Keep journal records small: long strings (a policy's text) become their hash."""
    if isinstance(value, str) and len(value) > limit:
        return {"sha256": hashlib.sha256(value.encode()).hexdigest(), "chars": len(value)}
    if isinstance(value, dict):
        return {str(k): summarize(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [summarize(v, limit) for v in value[:50]]
    return value


class Channel:
    """Runs the heartbeat, the command poller and policy sync for the daemon."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.config = agent.config
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopped = threading.Event()
        self.rejected_hash: str | None = None
        self.heartbeat: Heartbeat | None = None

    def interval(self) -> float:
        policy = self.agent.policy
        if policy is None:
            return 30.0
        return float(policy.get("agent").get("heartbeat_interval") or 30.0)

    def status(self) -> dict[str, Any]:
        status = self.agent.status()
        status["interval"] = self.interval()
        link = self.agent.link
        if link is not None:
            status["pending"] = link.pending()
        return status

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="channel", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Tell the console this is a deliberate stop, then end the channel."""
        loop, stop = self._loop, self._stop
        if self._thread is None or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("the console channel ended")

    async def _main(self) -> None:
        from .link import make_verify

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        session = ConsoleSession(self.config.console_url, self.agent.link.token,
                                 verify=make_verify(self.config))
        self.heartbeat = Heartbeat(session, self.status, interval=self.interval,
                                   on_reply=lambda reply: self._on_reply(session, reply))
        done = self._load_done()
        poller = CommandPoller(session, self._execute, done=done, on_done=self._save_done)
        tasks = [asyncio.create_task(self.heartbeat.run(self._stop)),
                 asyncio.create_task(poller.run(self._stop))]
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self.heartbeat.beat("stopping"), 3)
        except Exception as exc:  # the console may be down: the stop is in the journal
            log.info("could not tell the console about the stop", error=str(exc))
        await session.aclose()

    # -- replies and commands ----------------------------------------------------------

    async def _on_reply(self, session: ConsoleSession, reply: dict[str, Any]) -> None:
        link = self.agent.link
        if link is not None:
            link.fleet = int(reply.get("fleet") or 1)
            link.drain_rate = float(reply.get("drain_rate") or link.drain_rate)
        ref = reply.get("policy")
        if not ref:
            return
        current = self.agent.policy.hash if self.agent.policy else None
        want = str(ref.get("hash"))
        if want in (current, self.rejected_hash):
            return
        resp = await session.request("GET", "/api/v1/policy")
        held = resp.json()
        text = str(held["text"])
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != held["hash"]:
            log.warning("the console's policy does not match its hash; not applied")
            return
        source = f"console:{held['floor']}"
        ok = await asyncio.to_thread(self.agent.reload, text, source)
        if not ok:
            self.rejected_hash = held["hash"]  # refused once; wait for a new one
        if self.heartbeat is not None:
            self.heartbeat.now.set()  # report the hash in force at once

    async def _execute(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name, args = str(cmd["name"]), dict(cmd.get("args") or {})
        try:
            result = await asyncio.to_thread(self.agent.commands.run, name, args)
        except Exception as exc:
            log.exception("command handler failed", name=name)
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(result, dict):
            result = {"ok": False, "error": f"handler returned {type(result).__name__}"}
        await asyncio.to_thread(
            self.agent.record, "agent", "agent.command", "info" if result.get("ok")
            else "warning", {"id": int(cmd["id"]), "name": name, "args": summarize(args),
                             "ok": bool(result.get("ok")), "result": summarize(result)},
            wait=True)
        return result

    def _load_done(self) -> dict[int, dict[str, Any]]:
        raw = self.agent.journal.get_meta(DONE_META)
        if not raw:
            return {}
        try:
            return {int(k): v for k, v in json.loads(raw).items()}
        except (ValueError, AttributeError):
            return {}

    def _save_done(self, done: dict[int, dict[str, Any]]) -> None:
        self.agent.journal.set_meta(DONE_META, json.dumps({str(k): v for k, v in done.items()}))
