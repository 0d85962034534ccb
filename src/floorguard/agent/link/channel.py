"""The agent's live channel to the console: heartbeats, commands, central policy.

Three small classes do the talking and know nothing of the daemon, so the fleet benchmark
runs a thousand of them in one process exactly as each agent runs its own (a thread for
the heartbeat and one for the command poll, per agent):

- ``ConsoleSession``: the console URL, the agent's bearer token and one HTTP client (in
  the agent, the link's own client: one connection pool for the three of them).
- ``Heartbeat``: posts the agent's state every interval (and ``"stopping"`` once before a
  deliberate stop); hands each reply to a callback.
- ``CommandPoller``: holds ``GET /api/v1/commands?wait=25`` open, runs each command it
  gets, posts the result; a command already run (its id remembered) is acknowledged again
  with the same result rather than run twice.

Both loops are plain threads on the blocking HTTP client the link already uses: an event
loop and an async HTTP stack would cost each operator PC a few MiB of resident memory for
two requests in flight.

``Channel`` wires them to the agent's parts, handed in by the daemon (its composition
root): the status callable, the policy in force (for ``[agent] heartbeat_interval``), the
``Commands`` registry (each command recorded as ``agent.command``), the reload through
which the floor policy the console holds is applied exactly like a local one, and the link
whose client and backlog it shares.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import structlog

from floorguard import __version__
from floorguard.agent.controls.base import Commands
from floorguard.agent.guarded import GuardedThread
from floorguard.agent.link.shipper import Link
from floorguard.config import AgentConfig
from floorguard.journal import Journal
from floorguard.policy import AgentSettings, Policy

log = structlog.get_logger("floorguard.channel")

POLL_WAIT = 25.0
DONE_KEEP = 200
DONE_META = "commands_done"
STOPPING_TIMEOUT = 3.0


class NoToken(Exception):
    """The agent is not enrolled yet."""


class ConsoleSession:
    """One agent's authenticated client for the console. The client may be shared with
    other threads (httpx's pool is thread-safe); a session closes only a client it made."""

    def __init__(self, base_url: str, token: Callable[[], str | None], *, verify: Any = True,
                 client: httpx.Client | None = None, timeout: float = 10.0):
        self.token = token
        self._own = client is None
        self.client = client or httpx.Client(
            base_url=base_url.rstrip("/"), verify=verify, timeout=timeout,
            headers={"User-Agent": f"floorguard/{__version__}"})
        self.base = "" if client is None else base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        token = self.token()
        if not token:
            raise NoToken("no agent token: run 'floorguard enroll'")
        return {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: dict[str, Any] | None = None,
                timeout: float | None = None) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self._headers(), "params": params}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout is not None:
            kwargs["timeout"] = timeout
        resp = self.client.request(method, self.base + path, **kwargs)
        if resp.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"console answered {resp.status_code} to {method} {path}: {resp.text[:200]}",
                request=resp.request, response=resp)
        return resp

    def close(self) -> None:
        if self._own:
            self.client.close()


class Heartbeat:
    """Posts ``status()`` every ``interval()`` seconds until ``stop`` is set; ``wake()``
    sends the next one at once (and ends the wait when stopping)."""

    def __init__(self, session: ConsoleSession, status: Callable[[], dict[str, Any]], *,
                 interval: Callable[[], float],
                 on_reply: Callable[[dict[str, Any]], None] | None = None):
        self.session = session
        self.status = status
        self.interval = interval
        self.on_reply = on_reply
        self.latencies: list[float] = []  # seconds per heartbeat round trip (bench reads)
        self.failures = 0
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def beat(self, state: str = "running", timeout: float | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        resp = self.session.request("POST", "/api/v1/heartbeat", timeout=timeout,
                                    json_body={"state": state, "status": self.status()})
        self.latencies.append(time.perf_counter() - t0)
        reply: dict[str, Any] = resp.json()
        return reply

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                reply = self.beat()
                self.failures = 0
                if self.on_reply is not None:
                    self.on_reply(reply)
            except NoToken:
                pass
            except (httpx.HTTPError, ValueError) as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.info("heartbeat failed", error=f"{type(exc).__name__}: {exc}",
                             failures=self.failures)
            except Exception:  # one bad reply must not end the heartbeats
                log.exception("heartbeat handling failed")
            if not stop.is_set():
                self._wake.wait(max(self.interval(), 0.0))


class CommandPoller:
    """Long-polls for commands, runs each through ``execute`` and posts its result."""

    def __init__(self, session: ConsoleSession,
                 execute: Callable[[dict[str, Any]], dict[str, Any]], *,
                 wait: float = POLL_WAIT, done: dict[int, dict[str, Any]] | None = None,
                 on_done: Callable[[dict[int, dict[str, Any]]], None] | None = None):
        self.session = session
        self.execute = execute
        self.wait = wait
        self.done: dict[int, dict[str, Any]] = dict(done or {})
        self.on_done = on_done
        self.failures = 0

    def poll_once(self, stop: threading.Event | None = None) -> int:
        resp = self.session.request("GET", "/api/v1/commands",
                                    params={"wait": self.wait},
                                    timeout=self.wait + 15)
        cmds = resp.json().get("commands", [])
        for cmd in cmds:
            if stop is not None and stop.is_set():
                # Stopping: a command without a result is delivered again next time.
                break
            cid = int(cmd["id"])
            result = self.done.get(cid)
            if result is None:
                try:
                    result = self.execute(cmd)
                except Exception as exc:  # a failing handler is a failed command, not a crash
                    log.exception("command failed", name=cmd.get("name"))
                    result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                self.done[cid] = result
                while len(self.done) > DONE_KEEP:
                    self.done.pop(min(self.done))
                if self.on_done is not None:
                    self.on_done(self.done)
            self.session.request("POST", f"/api/v1/commands/{cid}/result",
                                 json_body={"result": result})
        return len(cmds)

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set. A poll in flight then runs to its end (at most
        ``wait`` seconds, or the client closed under it) and nothing more is run."""
        while not stop.is_set():
            try:
                self.poll_once(stop)
                self.failures = 0
            except NoToken:
                stop.wait(5)
            except Exception as exc:
                if stop.is_set():
                    break  # the client may have been closed under the poll
                self.failures += 1
                if not isinstance(exc, (httpx.HTTPError, ValueError)):
                    log.exception("command poll failed")
                elif self.failures in (1, 10) or self.failures % 100 == 0:
                    log.info("command poll failed", error=f"{type(exc).__name__}: {exc}",
                             failures=self.failures)
                stop.wait(min(30.0, 0.5 * 2 ** min(self.failures, 6)))


def summarize(value: Any, limit: int = 200) -> Any:
    """Keep journal records small: long strings (a policy's text) become their hash."""
    if isinstance(value, str) and len(value) > limit:
        return {"sha256": hashlib.sha256(value.encode()).hexdigest(), "chars": len(value)}
    if isinstance(value, dict):
        return {str(k): summarize(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [summarize(v, limit) for v in value[:50]]
    return value


class Recorder(Protocol):
    """The agent's ``record``: journals one event (waiting until it is durable)."""

    def __call__(self, control: str, kind: str, severity: str, details: dict[str, Any], *,
                 wait: bool | None = None) -> Any: ...


class Channel:
    """Runs the heartbeat, the command poller and policy sync for the daemon, on the
    link's HTTP client."""

    def __init__(self, config: AgentConfig, *, link: Link, journal: Journal,
                 commands: Commands, policy: Callable[[], Policy | None],
                 status: Callable[[], dict[str, Any]], reload: Callable[[str, str], bool],
                 record: Recorder):
        self.config = config
        self.link = link
        self.journal = journal
        self.commands = commands
        self._policy = policy
        self._status = status
        self._reload = reload
        self._record = record
        self._stop = threading.Event()
        self._threads: list[GuardedThread] = []
        self.rejected_hash: str | None = None
        self.session: ConsoleSession | None = None
        self.heartbeat: Heartbeat | None = None
        self.poller: CommandPoller | None = None

    def interval(self) -> float:
        policy = self._policy()
        return (policy.settings(AgentSettings) if policy else AgentSettings()
                ).heartbeat_interval

    def status(self) -> dict[str, Any]:
        status = self._status()
        status["interval"] = self.interval()
        status["pending"] = self.link.pending()
        return status

    def start(self) -> None:
        link = self.link
        self.session = ConsoleSession(self.config.console_url, link.token, client=link.client)
        self.heartbeat = Heartbeat(self.session, self.status, interval=self.interval,
                                   on_reply=self._on_reply)
        self.poller = CommandPoller(self.session, self._execute, done=self._load_done(),
                                    on_done=self._save_done)
        self._threads = [
            GuardedThread("heartbeat", self._heartbeat_main, stop=self._stop),
            GuardedThread("commands", self._poller_main, stop=self._stop)]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Tell the console this is a deliberate stop, then end the channel. The heartbeat
        thread sends ``"stopping"`` after its last beat, so the console cannot receive
        them out of order; a command poll still open is left to end with the process."""
        if not self._threads or self.heartbeat is None:
            return
        self._stop.set()
        self.heartbeat.wake()
        self._threads[0].join(timeout)

    def _heartbeat_main(self) -> None:
        assert self.heartbeat is not None
        # An exception out of run() reaches the guard, which restarts the heartbeat.
        self.heartbeat.run(self._stop)
        try:
            self.heartbeat.beat("stopping", timeout=STOPPING_TIMEOUT)
        except Exception as exc:  # the console may be down: the stop is in the journal
            log.info("could not tell the console about the stop", error=str(exc))

    def _poller_main(self) -> None:
        assert self.poller is not None
        self.poller.run(self._stop)  # the guard restarts it if it raises

    # -- replies and commands ----------------------------------------------------------

    def _on_reply(self, reply: dict[str, Any]) -> None:
        self.link.fleet = int(reply.get("fleet") or 1)
        self.link.drain_rate = float(reply.get("drain_rate") or self.link.drain_rate)
        ref = reply.get("policy")
        if not ref or self.session is None:
            return
        policy = self._policy()
        current = policy.hash if policy else None
        want = str(ref.get("hash"))
        if want in (current, self.rejected_hash):
            return
        held = self.session.request("GET", "/api/v1/policy").json()
        text = str(held["text"])
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != held["hash"]:
            log.warning("the console's policy does not match its hash; not applied")
            return
        source = f"console:{held['floor']}"
        if not self._reload(text, source):
            self.rejected_hash = held["hash"]  # refused once; wait for a new one
        if self.heartbeat is not None:
            self.heartbeat.wake()  # report the hash in force at once

    def _execute(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name, args = str(cmd["name"]), dict(cmd.get("args") or {})
        try:
            result = self.commands.run(name, args)
        except Exception as exc:
            log.exception("command handler failed", name=name)
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(result, dict):
            result = {"ok": False, "error": f"handler returned {type(result).__name__}"}
        self._record(
            "agent", "agent.command", "info" if result.get("ok") else "warning",
            {"id": int(cmd["id"]), "name": name, "args": summarize(args),
             "ok": bool(result.get("ok")), "result": summarize(result)}, wait=True)
        return result

    def _load_done(self) -> dict[int, dict[str, Any]]:
        raw = self.journal.get_meta(DONE_META)
        if not raw:
            return {}
        try:
            return {int(k): v for k, v in json.loads(raw).items()}
        except (ValueError, AttributeError):
            return {}

    def _save_done(self, done: dict[int, dict[str, Any]]) -> None:
        self.journal.set_meta(DONE_META, json.dumps({str(k): v for k, v in done.items()}))
