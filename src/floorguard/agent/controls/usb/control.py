"""USB control: no driver binds to storage, phones or network adapters; keyboards, mice,
hubs and approved headsets keep working; every decision is evidence.

What it does, in the order it happens:

* **Kernel default-deny.** At start, and for every root hub that appears later, it writes
  ``authorized_default=0`` and ``interface_authorized_default=0``: a new device and each
  interface of it stay unbound until floorguard authorizes them. It never writes them back
  to 1, not on stop, not on crash (the udev rule in ``systemd/`` keeps keyboards and mice
  working while the agent is not running).
* **A decision per device, from its descriptors.** A device that is not authorized has no
  interfaces in sysfs, so the control reads the binary ``descriptors`` attribute and judges
  every interface of every configuration by the ``[usb]`` policy: ``[[usb.device]]``
  entries (vendor:product, optional serial and port) decide the whole device; otherwise a
  ``block`` pattern blocks an interface, else an ``allow`` pattern allows it, else
  ``default``. All interfaces allowed: the device is authorized (``usb.allowed``, info).
  None: it stays unauthorized (``usb.blocked``, violation). Some: the device and only its
  allowed interfaces are authorized (``usb.allowed``, warning, naming the blocked ones);
  the blocked interfaces stay unauthorized, so no driver ever binds to them. Malformed or
  truncated descriptors keep the device blocked and the event says what is wrong.
* **Audit mode** (``mode = "audit"``) decides and records exactly the same, but
  authorizes everything.
* **Devices present at start** (and after a policy reload) are judged too. A device the
  policy still allows is left alone, so an agent restart never cuts off a disk in use or
  a headset in a call; a device it now blocks is de-authorized.
* **A new keyboard while another is present** (the BadUSB pattern) is a warning, or is
  blocked with ``new_keyboard = "block"``. Keyboards present at start are never blocked.
* **A block device on USB that appears anyway** (audit mode, or someone authorizing a
  blocked device by hand) is a violation naming it; in enforce mode its USB device is
  de-authorized again. The periodic check also re-blocks devices authorized behind
  floorguard's back.
* **The operator is told** by a desktop notification when a device is blocked.

Every event names the rule that decided (``usb.device[...]``, ``usb.block[..]``,
``usb.allow[..]``, ``usb.new_keyboard`` or ``default``), the identity (vendor, product,
serial, manufacturer and product strings), the interfaces with their verdicts, the port,
and what the device was recognised as (storage, phone, network, hid, audio, hub, other).

Where and in what order. The decisions run in a worker process of the agent, so nothing
else the agent does competes with them for the interpreter lock. The kernel state is the
action and the event is its evidence: a decision is written to ``authorized`` first, on
the worker's monitor thread, within a fraction of a millisecond of the uevent; the event
then goes to the agent, which journals it and, for a block, waits until it is durable
(fsync) before the operator is notified. If journaling fails the device simply stays as
decided (a blocked device stays blocked) and the failure is logged. An allowed device
whose event was lost in a crash is recorded again when the restarted agent judges the
devices present.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import structlog

from floorguard.agent.adapters.desktop import notify_user
from floorguard.agent.adapters.sysfs_usb import (
    SysfsUsb,
    decimal,
    devnum_of,
    hexadecimal,
    interface_slot,
    is_root_hub,
)
from floorguard.agent.controls.base import Control, ControlContext, ControlUnavailable
from floorguard.agent.controls.usb.evidence import (
    Evidence,
    EvidenceWriter,
    Known,
    Notify,
    Occasion,
    decision_evidence,
    describe,
    notice,
)
from floorguard.agent.controls.usb.rules import (
    Decision,
    DescriptorError,
    Descriptors,
    Identity,
    Recognition,
    UsbRules,
    evaluate,
    has_boot_keyboard,
    parse_descriptors,
    recognize,
)
from floorguard.agent.guarded import GUARDS, GuardedThread
from floorguard.journal import JournalError
from floorguard.policy import Policy, UsbSettings, parse_policy

log = structlog.get_logger("floorguard.usb")

PID_FILE = "usb-agent.pid"
SWITCH_INTERVAL = 0.0002  # seconds
MEMO_SIZE = 256  # plugged devices' judgements kept
INVALID_DESCRIPTORS = "invalid_descriptors"
BYPASS_RULE = "authorized_outside_floorguard"





class UsbDecider(Control):
    """The decisions and their writes to sysfs (see the module docstring), in whichever
    process runs them: the agent's USB worker, or the caller's own (tests)."""

    name = "usb"
    check_interval = 10.0

    def __init__(self, ctx: ControlContext, *, notify: Notify | None = None,
                 adapter: SysfsUsb | None = None):
        super().__init__(ctx)
        self.notify: Notify = notify or notify_user
        self.adapter = adapter
        self.rules = UsbRules()
        self.known: dict[str, Known] = {}
        # Plugged devices already judged under the current rules (see _remember).
        self._parsed: dict[bytes, Descriptors] = {}
        self._decided: dict[tuple[Any, ...], tuple[Recognition, Decision]] = {}
        self._lock = threading.RLock()
        self._monitor: Any = None
        self._thread: GuardedThread | None = None
        self._writer: EvidenceWriter | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = threading.Event()
        self.decisions = 0
        self.uevents = 0
        self.last_uevent: tuple[str, str] = ("", "")

    # -- lifecycle -------------------------------------------------------------------

    def start(self, policy: Policy) -> None:
        super().start(policy)
        self._set_rules(policy)
        if self.adapter is None:
            self.adapter = SysfsUsb(self.ctx.config.sysfs_root)
        why = self.adapter.available()
        if why:
            raise ControlUnavailable(why)
        # A thread waiting for the GIL gets it after at most this long: the default 5 ms
        # would let CPU-bound work on another thread of this process (the evidence
        # hand-over; everything else when a decider runs inside the agent) sit between a
        # uevent and its decision.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._writer = EvidenceWriter(self.record, self.notify, self.ctx.operator.current,
                                      self._stopping)
        self._writer.start()
        try:
            # Listen before looking: a device plugged while the present ones are judged
            # is then seen twice at worst (the second time is recognised), never missed.
            self._monitor = self.adapter.monitor()
            self._monitor.start()
            self._deny_by_default()
            self._reconcile(Occasion.PRESENT)
            self._wake_r, self._wake_w = os.pipe()
            self._thread = GuardedThread("usb-monitor", self._monitor_loop,
                                         stop=self._stopping)
            self._thread.start()
        except BaseException:
            self.stop()  # no half-started threads; the kernel defaults stay deny
            raise
        self._write_pid_file()
        log.info("usb control started", mode=self.rules.mode, devices=len(self.known))

    def apply_policy(self, policy: Policy) -> None:
        super().apply_policy(policy)
        with self._lock:
            self._set_rules(policy)
            self._reconcile(Occasion.RELOADED)

    def _set_rules(self, policy: Policy) -> None:
        self.rules = UsbRules.from_settings(policy.settings(UsbSettings))
        self._decided.clear()  # judged under the old rules

    def stop(self) -> None:
        """Stops watching. Authorization stays as it is and the kernel defaults stay deny:
        the udev rule takes over for keyboards, mice and hubs."""
        self._stopping.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        if self._writer is not None:
            self._writer.stop(15)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        self._monitor = None
        self._remove_pid_file()

    def check(self) -> None:
        """Periodic reconcile: root hubs still deny by default, and no device floorguard
        blocked has been authorized behind its back."""
        with self._lock:
            self._deny_by_default()
            self.ctx.state["usb"] = self.status()
            if self.rules.mode != "enforce":
                return
            adapter = self._adapter()
            for known in list(self.known.values()):
                if known.authorized:
                    continue
                if adapter.read(known.path, "authorized") == "1":
                    self._set(known.path, "0")
                    self._emit(Evidence("usb.blocked", "violation", {
                        **describe(known), "rule": BYPASS_RULE,
                        "reason": "the device was authorized outside floorguard; "
                                  "de-authorized again"}))

    def status(self) -> dict[str, Any]:
        with self._lock:
            blocked = sum(1 for k in self.known.values() if k.decision.verdict == "blocked")
            return {"mode": self.rules.mode, "devices": len(self.known), "blocked": blocked,
                    "decisions": self.decisions, "uevents": self.uevents}

    # -- the monitor thread ----------------------------------------------------------

    def _monitor_loop(self) -> None:
        mon = self._monitor
        fd = mon.fileno()
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([fd, self._wake_r], [], [])
            except (OSError, ValueError):
                if self._stopping.is_set():
                    return
                # Monitoring must not end on a hiccup: devices stay blocked meanwhile.
                log.exception("waiting for uevents failed; retrying")
                self._stopping.wait(0.1)
                continue
            if self._wake_r in ready:
                return
            while True:
                try:
                    device = mon.poll(timeout=0)
                except OSError as exc:  # a broken socket: log and keep listening
                    log.error("reading a uevent failed", error=str(exc))
                    break
                if device is None:
                    break
                try:
                    self._on_uevent(device)
                except Exception:  # one bad device must not end monitoring
                    log.exception("handling a USB uevent failed",
                                  device=getattr(device, "sys_path", "?"))

    def _on_uevent(self, device: Any) -> None:
        # Each attribute of a pyudev device is a call into libudev: read each once.
        action, subsystem, sys_path = device.action, device.subsystem, device.sys_path
        self.uevents += 1
        self.last_uevent = (action, sys_path)
        if subsystem == "usb":
            devtype = device.device_type
            if devtype == "usb_device":
                if action == "add":
                    self._device_added(device, sys_path)
                elif action == "remove":
                    self._device_removed(device)
            elif devtype == "usb_interface" and action == "add":
                self._interface_added(device)
        elif subsystem == "block" and action == "add":
            self._block_added(device)

    # -- decisions -------------------------------------------------------------------

    def _adapter(self) -> SysfsUsb:
        assert self.adapter is not None
        return self.adapter

    def _device_added(self, device: Any, sys_path: str) -> None:
        adapter = self._adapter()
        path = adapter.path(sys_path)
        name = sys_path.rpartition("/")[2]
        if is_root_hub(name):
            self._deny_hub(path)
            return
        with self._lock:
            known = self.known.get(path)
            if known is not None and known.devnum == devnum_of(
                    device.properties.get("DEVNUM") or adapter.read(path, "devnum")):
                return  # already judged while the present devices were reconciled
            self._decide(path, name, Occasion.PLUGGED)

    def _decide(self, path: str, port: str, occasion: Occasion) -> Known:
        adapter = self._adapter()
        present = occasion.present
        rules = self.rules
        if present and rules.new_keyboard == "block":
            # Never lock out the keyboard the operator is typing on: at start a second
            # keyboard is reported, not blocked.
            rules = dataclasses.replace(rules, new_keyboard="warn")
        reason = ""
        desc: Descriptors | None = None
        raw = b""
        try:
            raw = adapter.read_descriptors(path)
            desc = self._parsed.get(raw) or parse_descriptors(raw)
        except DescriptorError as exc:
            desc, reason = None, f"malformed descriptors: {exc}"
        except OSError as exc:
            desc, reason = None, f"cannot read the descriptors: {exc.strerror or exc}"
        # Only what the decision needs is read before it is written; the strings that
        # only the evidence needs are read afterwards.
        ident = self._identity(path, port, desc)
        fresh: tuple[Any, ...] | None = None  # the key of a plugged device's new judgement
        if desc is None:
            recognition = Recognition("other", ())
            decision = Decision("blocked", INVALID_DESCRIPTORS, (), reason=reason)
        else:
            # Whether another keyboard is in use matters only when this is a keyboard.
            others = has_boot_keyboard(desc) and any(
                k.keyboard and k.authorized and k.path != path for k in self.known.values())
            key = (raw, ident.serial, port, others)
            memo = self._decided.get(key) if not present else None
            if memo is None:
                names = self._interface_names(path) if present else {}
                recognition = recognize(desc, names)
                decision = evaluate(rules, ident, desc, keyboard_present=others,
                                    recognition=recognition)
                if not present:
                    fresh = key
            else:
                recognition, decision = memo
        previous = self.known.get(path)
        authorized = self._apply(path, decision, present=present)
        if fresh is not None and desc is not None:  # kept after the write
            self._remember(raw, desc, fresh, recognition, decision)
        ident = dataclasses.replace(
            ident, serial=ident.serial if ident.serial is not None
            else adapter.read(path, "serial"),
            manufacturer=adapter.read(path, "manufacturer"),
            product_name=adapter.read(path, "product"))
        known = Known(path, devnum_of(adapter.read(path, "devnum")), ident, recognition,
                      decision, authorized)
        self.known[path] = known
        self.decisions += 1
        if (occasion is Occasion.RELOADED and previous is not None
                and previous.decision == decision):
            return known
        self._emit(decision_evidence(self.rules, known, occasion,
                                     previous.decision if previous else None))
        return known

    def _remember(self, raw: bytes, desc: Descriptors, key: tuple[Any, ...],
                  recognition: Recognition, decision: Decision) -> None:
        """Keep a plugged device's judgement for its next plug: the same descriptor bytes
        (and serial, port and keyboard state) under the same rules decide the same way,
        and the operator's own headset or keyboard is plugged again and again."""
        if len(self._decided) >= MEMO_SIZE:
            self._decided.clear()
            self._parsed.clear()
        self._parsed[raw] = desc
        self._decided[key] = (recognition, decision)

    def _apply(self, path: str, decision: Decision, *, present: bool) -> bool:
        """Write the decision to the kernel; returns whether the device is authorized."""
        adapter = self._adapter()
        audit = self.rules.mode == "audit"
        if decision.verdict == "blocked" and not audit:
            if present and adapter.read(path, "authorized") == "1":
                # In use until now: unbind the interfaces' drivers first, then the device.
                for _cfg, _num, ipath in adapter.interfaces(path):
                    if adapter.read(ipath, "authorized") == "1":
                        self._set(ipath, "0")
            # Written even when the kernel default already left it unauthorized: a device
            # enumerated before the defaults were set must not keep its driver.
            self._set(path, "0")
            return False
        if not present or adapter.read(path, "authorized") != "1":
            self._set(path, "1")
        allowed = decision.allowed_interfaces
        for cfg, num, ipath in adapter.interfaces(path):
            want = "1" if audit or (cfg, num) in allowed else "0"
            if adapter.read(ipath, "authorized") != want:
                self._set(ipath, want)
        return True

    def _set(self, path: str, value: str) -> None:
        try:
            self._adapter().write(path, "authorized", value)
        except OSError as exc:
            log.error("cannot write authorized", path=path, value=value, error=str(exc))

    def _interface_added(self, device: Any) -> None:
        """Interfaces appear once the kernel configures an authorized device (and again
        when software switches configuration): authorize the allowed ones."""
        slot = interface_slot(device.sys_name)
        if slot is None:
            return
        adapter = self._adapter()
        ipath = adapter.path(device.sys_path)
        with self._lock:
            known = self.known.get(os.path.dirname(ipath))
            if known is None or not known.authorized:
                return
            allowed = (self.rules.mode == "audit"
                       or slot in known.decision.allowed_interfaces)
            if allowed and adapter.read(ipath, "authorized") != "1":
                self._set(ipath, "1")

    def _device_removed(self, device: Any) -> None:
        path = self._adapter().path(device.sys_path)
        with self._lock:
            known = self.known.pop(path, None)
        if known is None:
            return
        self._emit(Evidence("usb.removed", "info", {
            **describe(known), "verdict": known.decision.verdict,
            "rule": known.decision.rule}))

    def _block_added(self, device: Any) -> None:
        parent = device.find_parent("usb", "usb_device")
        if parent is None:
            return  # not on USB
        adapter = self._adapter()
        ppath = adapter.path(parent.sys_path)
        iface = device.find_parent("usb", "usb_interface")
        slot = interface_slot(iface.sys_name) if iface is not None else None
        with self._lock:
            known = self.known.get(ppath)
            if known is not None and slot in known.decision.allowed_interfaces:
                return  # the policy allows this storage interface
            audit = self.rules.mode == "audit"
            if not audit:
                # Cut the driver off where it bound: the interface if the rest of the
                # device is allowed, else the whole device.
                if iface is not None and known is not None and known.authorized:
                    self._set(adapter.path(iface.sys_path), "0")
                else:
                    self._set(ppath, "0")
                    if known is not None:
                        known.authorized = False
            details: dict[str, Any] = {
                "device": parent.sys_name, "port": parent.sys_name,
                "block_device": device.sys_name,
                "devname": device.properties.get("DEVNAME"),
                "interface": iface.sys_name if iface is not None else None,
                "mode": self.rules.mode,
                "rule": known.decision.rule if known else "unknown",
                "action": "none (audit mode)" if audit else "deauthorized",
                "reason": ("a block device appeared on a USB device the policy blocks"
                           if known else "a block device appeared on a USB device "
                           "floorguard never authorized"),
            }
            if known is not None:
                details.update(describe(known))
        self._emit(Evidence("usb.blocked", "violation", details,
                             notify=None if audit else notice(self.rules, details)))

    def _reconcile(self, occasion: Occasion) -> None:
        adapter = self._adapter()
        devices = [d for d in adapter.usb_devices() if not is_root_hub(d.sys_name)]

        def order(d: Any) -> tuple[int, int, str]:
            p = adapter.path(d.sys_path)
            return (decimal(adapter.read(p, "busnum")), decimal(adapter.read(p, "devnum")),
                    d.sys_name)

        with self._lock:
            seen = set()
            for d in sorted(devices, key=order):
                path = adapter.path(d.sys_path)
                seen.add(path)
                try:
                    self._decide(path, d.sys_name, occasion)
                except Exception:
                    log.exception("judging a present USB device failed", path=path)
            for gone in set(self.known) - seen:
                self.known.pop(gone, None)

    # -- root hubs -------------------------------------------------------------------

    def _deny_by_default(self) -> None:
        adapter = self._adapter()
        for d in adapter.usb_devices():
            if is_root_hub(d.sys_name):
                self._deny_hub(adapter.path(d.sys_path))

    def _deny_hub(self, path: str) -> None:
        adapter = self._adapter()
        for attr in ("authorized_default", "interface_authorized_default"):
            if adapter.read(path, attr) not in (None, "0"):
                try:
                    adapter.write(path, attr, "0")
                except OSError as exc:
                    log.error("cannot set USB default-deny", hub=path, attr=attr,
                              error=str(exc))

    # -- evidence --------------------------------------------------------------------

    def _identity(self, path: str, port: str, desc: Descriptors | None) -> Identity:
        read = self._adapter().read
        if desc is not None:
            vendor, product = desc.device.vendor, desc.device.product
        else:
            vendor = hexadecimal(read(path, "idVendor"))
            product = hexadecimal(read(path, "idProduct"))
        # The serial is read before the decision only when a device rule needs it.
        vid, pid = f"{vendor:04x}", f"{product:04x}"
        wanted = any(r.serial is not None and r.vendor == vid and r.product == pid
                     for r in self.rules.devices)
        return Identity(vendor=vendor, product=product,
                        serial=read(path, "serial") if wanted else None, port=port)

    def _interface_names(self, path: str) -> dict[tuple[int, int], str]:
        adapter = self._adapter()
        out = {}
        for cfg, num, ipath in adapter.interfaces(path):
            name = adapter.read(ipath, "interface")
            if name:
                out[(cfg, num)] = name
        return out

    def _emit(self, evidence: Evidence) -> None:
        assert self._writer is not None
        self._writer.emit(evidence)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every decision so far is recorded (tests and shutdown use it)."""
        if self._writer is not None:
            self._writer.drain(timeout)

    # -- the udev helper hand-over ---------------------------------------------------

    def _pid_path(self) -> Path:
        return Path(self.ctx.config.runtime_dir) / PID_FILE

    def _write_pid_file(self) -> None:
        """Tells the boot-time udev helper that the agent decides now."""
        path = self._pid_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(f"{os.getpid()}\n", encoding="ascii")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write the USB pid file; the udev helper keeps authorizing "
                        "keyboards and mice too", path=str(path), error=str(exc))

    def _remove_pid_file(self) -> None:
        path = self._pid_path()
        with contextlib.suppress(OSError):
            if path.read_text(encoding="ascii").strip() == str(os.getpid()):
                path.unlink()



# --- the agent side: decisions run in their own process -----------------------------------


class UsbControl(Control):
    """USB control (policy table ``[usb]``; see the module docstring for what it does).

    The decisions run in a worker process of their own (``floorguard.agent.controls.usb.control``'s
    ``worker_main``), so that nothing else the agent does (process scans, reports,
    the journal) competes with them for the interpreter lock between a uevent and its
    ``authorized`` write. The worker sends every decision back as an event; this side
    journals it and, once a block is durable, notifies the operator. The worker ends when
    the agent does (its input closes); if it dies alone, the kernel default stays deny,
    the gap is recorded, and the next check starts a new one.
    """

    name = "usb"
    check_interval = 10.0

    def __init__(self, ctx: ControlContext, *, notify: Notify | None = None):
        super().__init__(ctx)
        self.notify: Notify = notify or notify_user
        self._proc: subprocess.Popen[str] | None = None
        self._reader: GuardedThread | None = None
        self._send_lock = threading.Lock()
        self._started = threading.Event()
        self._start_error: str | None = None
        self._stopping = False
        self.worker_status: dict[str, Any] = {}

    def start(self, policy: Policy) -> None:
        super().start(policy)
        self._spawn(policy)

    def apply_policy(self, policy: Policy) -> None:
        super().apply_policy(policy)
        self._send({"op": "policy", **_policy_message(policy)})

    def check(self) -> None:
        """Restarts a worker that died; otherwise asks it to reconcile (see UsbDecider)."""
        if self._stopping or self.policy is None:
            return
        if self._proc is None or self._proc.poll() is not None:
            try:
                self._spawn(self.policy)
            except ControlUnavailable as exc:
                log.error("the USB worker did not restart", error=str(exc))
            return
        self._send({"op": "check"})

    def status(self) -> dict[str, Any]:
        alive = self._proc is not None and self._proc.poll() is None
        return {**self.worker_status, "worker": self._proc.pid if alive and self._proc
                else None}

    def stop(self) -> None:
        """Stops the worker after it has handed over every decision. Authorization and the
        deny defaults stay as they are."""
        self._stopping = True
        proc = self._proc
        if proc is None:
            return
        self._send({"op": "stop"})
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if self._reader is not None:
            self._reader.join(10)
        self._proc = None

    # -- plumbing ----------------------------------------------------------------------

    def _spawn(self, policy: Policy) -> None:
        self._started.clear()
        self._start_error = None
        # The worker imports this very package (wherever it is installed) and inherits
        # the process environment untouched; stdout carries the protocol, stderr is the
        # agent's log stream.
        root = str(Path(__file__).resolve().parents[4])
        code = (f"import sys; sys.path.insert(0, {root!r}); "
                "from floorguard.agent import keep_out_unused_imports; "
                "keep_out_unused_imports(); "
                "from floorguard.agent.controls.usb.control import worker_main; "
                "sys.exit(worker_main())")
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, bufsize=1)
        self._proc = proc
        # No stop event: the reader ends when the worker's output does. One that raises
        # (an undecodable line) reads on from where it was.
        self._reader = GuardedThread("usb-worker-reader", lambda: self._read_loop(proc))
        self._reader.start()
        config = self.ctx.config
        self._send({"op": "start", "config": {"sysfs_root": config.sysfs_root,
                                              "runtime_dir": config.runtime_dir,
                                              "log_level": config.log_level},
                    **_policy_message(policy)})
        if not self._started.wait(WORKER_START_TIMEOUT):
            self._start_error = "the USB worker did not start in time"
        if self._start_error is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(5)
            self._proc = None
            raise ControlUnavailable(self._start_error)

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with self._send_lock:
            try:
                proc.stdin.write(json.dumps(message) + "\n")
                proc.stdin.flush()
            except (OSError, ValueError) as exc:
                log.error("cannot reach the USB worker", error=str(exc))

    def _read_loop(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                self._handle(json.loads(line))
            except Exception:  # one bad message must not end the hand-over
                log.exception("handling a message from the USB worker failed")
        if not self._started.is_set() or self._start_error is not None:
            # A failed start is reported by start() itself.
            self._start_error = self._start_error or "the USB worker exited at start"
            self._started.set()
            return
        if not self._stopping:
            code = proc.wait()
            log.error("the USB worker stopped; USB stays deny-by-default", code=code)
            self.ctx.record("agent", "agent.control_unavailable", "warning",
                            {"control": self.name,
                             "reason": f"the USB worker exited with code {code}; "
                                       "restarting at the next check"})

    def _handle(self, msg: dict[str, Any]) -> None:
        if "event" in msg:
            kind, severity, details = msg["event"]
            try:
                # Warnings and violations return only once durable: the notice below
                # (sent by the worker after the event) follows the evidence.
                self.record(kind, severity, details)
            except JournalError as exc:
                log.error("USB decision not recorded; the device stays as decided",
                          kind=kind, port=details.get("port"), error=str(exc))
        elif "notify" in msg:
            title, body = msg["notify"]
            user = self.ctx.operator.current()
            try:
                self.notify(user, title, body)
            except Exception:
                log.exception("notifying the operator failed", user=user)
        elif "status" in msg:
            self.worker_status = dict(msg["status"])
            self.ctx.state["usb"] = self.status()
        elif "ready" in msg:
            self.worker_status = dict(msg["ready"])
            self._started.set()
        elif "unavailable" in msg:
            self._start_error = str(msg["unavailable"])
            self._started.set()


WORKER_START_TIMEOUT = 30.0


def _policy_message(policy: Policy) -> dict[str, Any]:
    """The policy as the worker gets it: its text, parsed there again by the same parser
    (so no hand-written serialisation of a Policy can drift from it)."""
    return {"text": policy.text, "source": policy.source}


def _policy_from_message(msg: dict[str, Any]) -> Policy:
    # The agent sent a policy it has already accepted; a failure here is a bug, and the
    # worker then refuses to start (USB stays deny-by-default).
    return parse_policy(str(msg["text"]), str(msg.get("source", "")))


def worker_main() -> int:
    """The USB worker: runs a UsbDecider and speaks JSON lines with the agent."""
    from floorguard.agent.controls.base import Commands, Operator
    from floorguard.config import AgentConfig
    from floorguard.logconfig import configure

    # The protocol gets its own copy of stdout; anything printed goes to the log stream.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(message) + "\n")
            out.flush()

    def forward(control: str, kind: str, severity: str, details: dict[str, Any], *,
                user: str | None = None, wait: bool | None = None) -> dict[str, Any] | None:
        send({"event": [kind, severity, details]})
        return None

    # The agent ends the worker by closing its input; a SIGTERM or SIGINT sent to the
    # whole service (systemd's stop, a Ctrl-C) must not end it before it has handed
    # over its last decisions, so they are ignored (no handler runs in this process).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    decider: UsbDecider | None = None
    code = 0
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "start":
            cfg = msg["config"]
            configure(cfg.get("log_level", "info"))
            ctx = ControlContext(config=AgentConfig(sysfs_root=cfg["sysfs_root"],
                                                    runtime_dir=cfg["runtime_dir"]),
                                 record=forward, commands=Commands(), operator=Operator())
            decider = UsbDecider(ctx, notify=lambda _u, t, b: send({"notify": [t, b]}))
            try:
                decider.start(_policy_from_message(msg))
            except ControlUnavailable as exc:
                send({"unavailable": str(exc)})
                return 0
            except Exception as exc:
                log.exception("the USB worker failed to start")
                send({"unavailable": f"failed to start: {type(exc).__name__}: {exc}"})
                return 1
            # Everything loaded so far lives as long as the worker: keep it out of the
            # collector's way, so that no full collection lands between a uevent and its
            # decision.
            gc.freeze()
            send({"ready": decider.status()})
        elif decider is None:
            continue
        elif op == "policy":
            decider.apply_policy(_policy_from_message(msg))
        elif op == "check":
            dead = GUARDS.dead()
            if dead:
                # A thread that must live is gone: end, and the agent's next check
                # starts a fresh worker (the gap is recorded there).
                log.error("a USB worker thread that must live is not running; ending the "
                          "worker", dead=dead)
                code = 1
                break
            decider.check()
            restarts = GUARDS.restarts()
            send({"status": {**decider.status(),
                             **({"thread_restarts": restarts} if restarts else {})}})
        elif op == "stop":
            break
    if decider is not None:
        decider.stop()  # hands over every decision before the worker ends
    return code


if __name__ == "__main__":
    sys.exit(worker_main())
