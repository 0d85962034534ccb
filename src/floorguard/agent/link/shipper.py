"""The link: ships the journal to the console, at least once, in order.

The journal is the buffer. The link reads records after the highest seq the console has
acknowledged, posts them in batches, and moves its mark only when the console answers
with a new acknowledged seq. The console being down never blocks the agent: failures back
off exponentially with jitter (so a floor of agents coming back does not arrive at once).

The first retry after a failure waits a random time over a window sized by the backlog:
``backlog x fleet / drain_rate`` seconds (capped), where the fleet size and the console's
drain rate come from heartbeat replies. Spread like this, a whole floor coming back after
an outage reaches the console at about the rate it can take in, instead of all at once.
A hole the journal made at its size cap is declared with the batch that jumps over it
(``gaps``), so the console can tell it from a broken chain.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from floorguard import __version__
from floorguard.agent.guarded import GuardedThread
from floorguard.config import AgentConfig
from floorguard.journal import Journal, JournalReader

log = structlog.get_logger("floorguard.link")

BATCH = 500
ACKED = "acked_seq"
MAX_DRAIN_WINDOW = 300.0


def retry_delay(failures: int, backlog: int, fleet: int, drain_rate: float,
                max_backoff: float = 60.0, rand: Any = random.random) -> float:
    """Seconds to wait before retry number ``failures`` (1 = the first retry).

    The first retry is spread uniformly over the time the console needs to take in the
    fleet's backlogs (assuming the others have about as much as this agent); later ones
    back off exponentially with jitter."""
    if failures <= 1:
        window = min(MAX_DRAIN_WINDOW, backlog * max(fleet, 1) / max(drain_rate, 1.0))
        return 0.5 + float(rand()) * max(window, 0.5)
    base = min(max_backoff, 0.5 * (2 ** min(failures, 10)))
    return base * (0.5 + 0.5 * float(rand()))


class LinkConfigError(Exception):
    pass


def check_url(url: str, *, allow_insecure: bool) -> None:
    """Plain HTTP only to loopback, unless the admin explicitly allowed it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 parsed lazily: "Port out of range" is raised here
    except ValueError as exc:  # "Invalid IPv6 URL": a message, never a traceback
        raise LinkConfigError(f"console_url {url!r} does not parse ({exc}): write it as "
                              "https://HOST[:PORT]") from None
    if parts.scheme not in ("http", "https"):
        raise LinkConfigError(f"console_url must start with https:// (got {url!r})")
    if parts.scheme == "http" and not allow_insecure:
        host = parts.hostname or ""
        if host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("127."):
            raise LinkConfigError(
                f"console_url {url} is plain HTTP to a remote host: use https://, or set "
                "allow_insecure_http = true in agent.toml if you really mean it")


def system_trust() -> Any:
    """The system's CA store (what ``update-ca-certificates`` manages, so a company CA
    added there is trusted). From its hashed directory when there is one: OpenSSL then
    reads only the CA a connection needs instead of holding every CA in memory."""
    import ssl

    paths = ssl.get_default_verify_paths()
    capath = paths.capath or paths.openssl_capath
    if capath and Path(capath).is_dir() and any(Path(capath).glob("*.0")):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies hostnames and chains
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(capath=capath)
        return ctx
    return ssl.create_default_context()


def make_verify(config: Any) -> Any:
    """How the console's certificate is verified: against ``ca_file``, else the system
    CAs; one context for the link's client, which the channel shares."""
    import ssl

    if config.ca_file:
        return ssl.create_default_context(cafile=config.ca_file)
    if urlsplit(config.console_url).scheme == "https":
        return system_trust()
    # Plain HTTP (loopback, or explicitly allowed): there is no TLS to verify, so no CA
    # bundle is loaded; a context that trusts nothing fails closed if TLS ever happens.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def make_client(config: Any, timeout: float = 10.0) -> Any:
    """The agent's one HTTP client: the link ships the journal on it and the channel
    (heartbeats, command polls, policy) shares its connection pool and TLS context.
    (``floorguard agent`` keeps httpx's command-line tool out: UNUSED_IN_THE_AGENT.)"""
    import httpx
    verify = make_verify(config)
    return httpx.Client(base_url=config.console_url.rstrip("/"), verify=verify,
                        timeout=timeout, headers={"User-Agent": f"floorguard/{__version__}"})


class Link:
    """Ships ``journal`` to the console named in ``config``. ``state`` is the agent's
    status dict, where the link reports itself (``link``, ``link_refused``)."""

    def __init__(self, journal: Journal, config: AgentConfig, state: dict[str, Any], *,
                 batch: int = BATCH, max_backoff: float = 60.0,
                 reader: Callable[[Path], JournalReader] = JournalReader):
        self.journal = journal
        self.state = state
        self._open_reader = reader
        self.config = config
        self.batch = batch
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: GuardedThread | None = None
        self.client: Any = None
        self.failures = 0
        self.connected = False
        self.fleet = 1  # learnt from heartbeat replies
        self.drain_rate = 5000.0
        self.refused: dict[int, str] = {}  # seq -> the console's answer (see ship)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        try:
            check_url(self.config.console_url, allow_insecure=self.config.allow_insecure_http)
        except LinkConfigError as exc:
            log.error("link disabled", error=str(exc))
            self.state["link"] = f"disabled: {exc}"
            return
        try:
            self.client = make_client(self.config)
        except Exception as exc:  # an unreadable ca_file: the agent runs on, journalling
            log.error("link disabled", error=f"{type(exc).__name__}: {exc}")
            self.state["link"] = f"disabled: {type(exc).__name__}: {exc}"
            return
        # Guarded: a journal read or a set_meta that raises restarts the loop (counted, with
        # backoff) instead of ending the shipping for good.
        self._thread = GuardedThread("link", self._run, stop=self._stop)
        self._thread.start()

    def stop(self, flush_timeout: float = 0.0) -> None:
        if self._thread is None:
            return
        deadline = time.monotonic() + flush_timeout
        while time.monotonic() < deadline and self.pending() > 0 and self.connected:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        if not self._thread.is_alive():
            self.client.close()

    def token(self) -> str | None:
        try:
            return self.config.token_path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def acked(self) -> int:
        value = self.journal.get_meta(ACKED)
        return int(value) if value else 0

    def pending(self) -> int:
        return max(self.journal.last_seq - self.acked(), 0)

    def _backoff(self) -> float:
        return retry_delay(self.failures, self.pending(), self.fleet, self.drain_rate,
                           self.max_backoff)

    def _run(self) -> None:
        # One reader per run: a restart after a failure starts from a fresh connection.
        # The client lives across restarts and is closed by stop().
        reader = self._open_reader(Path(self.config.state_dir))
        client = self.client
        warned_token = False
        try:
            while not self._stop.is_set():
                token = self.token()
                if token is None:
                    if not warned_token:
                        log.warning("no agent token: run 'floorguard enroll' to connect this "
                                    "agent; events stay in the journal meanwhile",
                                    token_file=str(self.config.token_path))
                        warned_token = True
                    self._wake.wait(5)
                    self._wake.clear()
                    continue
                records = list(reader.records(after_seq=self.acked(), limit=self.batch))
                if not records:
                    self._wake.wait(5)
                    self._wake.clear()
                    continue
                gaps = reader.gaps(after_seq=self.acked(), upto=records[-1]["seq"])
                try:
                    acked = self.ship(client, token, records, gaps)
                except Exception as exc:
                    self.failures += 1
                    self.connected = False
                    delay = self._backoff()
                    log.info("console unreachable; will retry", error=str(exc),
                             retry_in=round(delay, 2), pending=self.pending())
                    self._stop.wait(delay)
                    continue
                self.failures = 0
                self.connected = True
                mark = self.acked()
                if acked != mark:
                    # Below our mark: the console lost records (a restored database) and
                    # needs them again; the journal still holds them.
                    if acked < mark:
                        log.warning("the console holds fewer records than it acknowledged "
                                    "before; sending them again", console_acked=acked,
                                    agent_acked=mark)
                    self.journal.set_meta(ACKED, str(min(acked,
                                                               self.journal.last_seq)))
                if acked == mark:
                    # No progress: do not resend the same batch in a tight loop.
                    self.failures += 1
                    self._stop.wait(self._backoff())
        finally:
            reader.close()

    def ship(self, client: Any, token: str, records: list[dict[str, Any]],
             gaps: list[dict[str, Any]] | None = None) -> int:
        """Post ``records``; return the console's acknowledgement.

        A batch the console refuses for what one record holds (a 422 naming an event, or
        413) is split in halves until that record is found, so every other record still
        arrives. The refused record is left out of later batches (it stays in the journal,
        is logged, and the heartbeat lists it under ``link_refused``); the console, seeing
        the agent jump it twice, records the hole as ``agent.chain_broken`` and moves the
        acknowledgement past it, so the link never stalls on it."""
        todo = [r for r in records if r["seq"] not in self.refused]
        if not todo:
            return self.acked()
        acked = self._post(client, token, todo, gaps or [])
        return self.acked() if acked is None else acked

    def _post(self, client: Any, token: str, records: list[dict[str, Any]],
              gaps: list[dict[str, Any]]) -> int | None:
        """One POST, split on a refusal; the highest acknowledgement heard, or None when
        every record was refused."""
        body: dict[str, Any] = {"events": records}
        if gaps:
            body["gaps"] = gaps
        resp = client.post("/api/v1/events", json=body,
                           headers={"Authorization": f"Bearer {token}"})
        if resp.status_code == 200:
            return int(resp.json()["acked"])
        if not _refuses_content(resp):
            raise RuntimeError(f"console answered {resp.status_code}: {resp.text[:200]}")
        if len(records) == 1:
            self._refuse(records[0], f"{resp.status_code}: {resp.text[:300]}")
            return None
        mid = len(records) // 2
        heard = [a for a in (self._post(client, token, records[:mid], gaps),
                             self._post(client, token, records[mid:], gaps)) if a is not None]
        return max(heard) if heard else None

    def _refuse(self, record: dict[str, Any], why: str) -> None:
        seq = int(record["seq"])
        self.refused[seq] = why
        for old in sorted(self.refused)[:-100]:  # bounded; a restart learns them again
            del self.refused[old]
        log.error("the console refuses a journal record; it stays in the journal and the "
                  "others are sent on", seq=seq, kind=record.get("kind"), answer=why)
        self.state["link_refused"] = {str(k): v[:200] for k, v in
                                            sorted(self.refused.items())[-10:]}


def _refuses_content(resp: Any) -> bool:
    """Whether the console refused the batch for what a record holds, not for who sent
    it or because it is down: too large, or a 422 whose detail names ``events``."""
    if resp.status_code == 413:
        return True
    if resp.status_code != 422:
        return False
    try:
        detail = resp.json().get("detail")
    except ValueError:
        return False
    return isinstance(detail, list) and any(
        isinstance(d, dict) and isinstance(d.get("loc"), list) and d["loc"][:1] == ["events"]
        for d in detail)
