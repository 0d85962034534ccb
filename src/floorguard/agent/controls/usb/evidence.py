"""The USB control's evidence: what was decided about each device, the event that records
it, and the thread that journals it after the decision was written to the kernel.

The decider (``control.UsbDecider``) writes ``authorized`` first and hands the evidence
over here, so journaling and notifying the operator never sit between a uevent and its
decision. A block is told to the operator only once its violation is durable.
"""

from __future__ import annotations

import enum
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from floorguard.agent.controls.usb.rules import Decision, Identity, Recognition, UsbRules
from floorguard.agent.guarded import GuardedThread
from floorguard.journal import JournalError

log = structlog.get_logger("floorguard.usb")

Notify = Callable[[str | None, str, str], Any]
Record = Callable[[str, str, dict[str, Any]], Any]


class Occasion(enum.Enum):
    """Why a device is being judged, which decides what is written and recorded."""

    PLUGGED = "plugged"  # a uevent: judged (or recognised) and always recorded
    PRESENT = "present"  # already there at start: never cut off if still allowed
    RELOADED = "reloaded"  # a policy reload: recorded only where the verdict changed

    @property
    def present(self) -> bool:
        """Whether the device was already there (the event's ``present`` field)."""
        return self is not Occasion.PLUGGED


@dataclass
class Known:
    """What the control decided about a device it has seen."""

    path: str
    devnum: int | None  # the kernel's device number: a re-plug gets a new one
    identity: Identity
    recognition: Recognition
    decision: Decision
    authorized: bool  # what floorguard left the device at

    @property
    def keyboard(self) -> bool:
        return self.recognition.keyboard


@dataclass
class Evidence:
    kind: str
    severity: str
    details: dict[str, Any]
    notify: tuple[str, str] | None = None  # title, body for the operator


def describe(known: Known) -> dict[str, Any]:
    """The device's identity as every USB event names it."""
    ident = known.identity
    return {
        "device": ident.port, "port": ident.port, "id": ident.id,
        "vendor": f"{ident.vendor:04x}", "product": f"{ident.product:04x}",
        "serial": ident.serial, "manufacturer": ident.manufacturer,
        "product_name": ident.product_name,
        "recognition": known.recognition.kind,
        "functions": list(known.recognition.functions),
        "interfaces": [i.as_event() for i in known.decision.interfaces],
    }


def notice(rules: UsbRules, details: dict[str, Any]) -> tuple[str, str] | None:
    """What the operator's desktop is told of a block, if the policy says to."""
    if not rules.notify:
        return None
    what = details.get("product_name") or details.get("id") or "a USB device"
    return ("USB device blocked",
            f"The floor policy blocked {what} ({details.get('recognition', 'device')}) "
            f"on port {details.get('port')}. This has been recorded.")


def decision_evidence(rules: UsbRules, known: Known, occasion: Occasion,
                      previous: Decision | None) -> Evidence:
    """``usb.blocked`` or ``usb.allowed`` for a decision just written."""
    d = known.decision
    audit = rules.mode == "audit"
    details = {
        **describe(known), "verdict": d.verdict, "rule": d.rule,
        "mode": rules.mode, "authorized": known.authorized, "present": occasion.present,
    }
    if d.reason:
        details["reason"] = d.reason
    if d.new_keyboard:
        details["new_keyboard"] = True
    if previous is not None:
        details["previous"] = {"verdict": previous.verdict, "rule": previous.rule}
    if d.verdict == "blocked":
        if audit:
            details["action"] = "none (audit mode)"
        return Evidence("usb.blocked", "violation", details,
                        notify=None if audit else notice(rules, details))
    if d.verdict == "partial":
        details["blocked_interfaces"] = [i.as_event() for i in d.blocked_interfaces]
        return Evidence("usb.allowed", "warning", details)
    return Evidence("usb.allowed", "warning" if d.new_keyboard else "info", details)


@dataclass
class _Marker:
    done: threading.Event


_STOP: Any = object()


class EvidenceWriter:
    """One thread that journals the decider's evidence in order, then notifies."""

    def __init__(self, record: Record, notify: Notify, operator: Callable[[], str | None],
                 stop: threading.Event):
        self._record = record
        self._notify = notify
        self._operator = operator
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = GuardedThread("usb-evidence", self._loop, stop=stop)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Journals what is queued, then ends."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def emit(self, evidence: Evidence) -> None:
        self._queue.put(evidence)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every decision so far is recorded (tests and shutdown use it)."""
        marker = _Marker(threading.Event())
        self._queue.put(marker)
        if not marker.done.wait(timeout):
            raise TimeoutError("USB decisions were not recorded in time")

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Marker):
                item.done.set()
                continue
            try:
                self._write(item)
            except Exception:
                log.exception("recording a USB decision failed")

    def _write(self, ev: Evidence) -> None:
        try:
            # Warnings and violations return only once durable (the journal's rule).
            self._record(ev.kind, ev.severity, ev.details)
        except JournalError as exc:
            log.error("USB decision not recorded; the device stays as decided",
                      kind=ev.kind, port=ev.details.get("port"), error=str(exc))
            return
        log.debug("usb decision", kind=ev.kind, severity=ev.severity,
                  port=ev.details.get("port"), id=ev.details.get("id"),
                  rule=ev.details.get("rule"))
        if ev.notify is not None:
            user = self._operator()
            try:
                self._notify(user, *ev.notify)
            except Exception:
                log.exception("notifying the operator failed", user=user)
