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

Ordering. The kernel state is the action and the event is its evidence. A decision is
written to ``authorized`` first, on the monitor thread, within a fraction of a millisecond
of the uevent; the event is then handed to an evidence thread that journals it and, for a
block, waits until it is durable (fsync) before the operator is notified and the block is
logged as done. If journaling fails the device simply stays as decided (a blocked device
stays blocked) and the failure is logged. An allowed device whose event was lost in a crash
is recorded again when the restarted agent judges the devices present.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import re
import select
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ..journal import JournalError
from ..policy import Policy
from .control import Control, ControlContext, ControlUnavailable
from .desktop import notify_user
from .usbdesc import (
    Decision,
    DescriptorError,
    Descriptors,
    Identity,
    Recognition,
    UsbRules,
    evaluate,
    parse_descriptors,
    recognize,
)

log = structlog.get_logger("floorguard.usb")

PID_FILE = "usb-agent.pid"
_INTERFACE_NAME = re.compile(r"^(?P<dev>[0-9.\-]+):(?P<cfg>\d+)\.(?P<num>\d+)$")
RECEIVE_BUFFER = 64 * 1024 * 1024
SWITCH_INTERVAL = 0.0002  # seconds
INVALID_DESCRIPTORS = "invalid_descriptors"
BYPASS_RULE = "authorized_outside_floorguard"

Notify = Callable[[str | None, str, str], Any]


class SysfsUsb:
    """The thin adapter over sysfs and libudev: enumerate, read, write, monitor."""

    def __init__(self, sysfs_root: str = "/sys"):
        import pyudev

        self.pyudev = pyudev
        self.context = pyudev.Context()
        self.root = sysfs_root.rstrip("/") or "/"
        self._udev_root = self.context.sys_path.rstrip("/")

    def available(self) -> str | None:
        """Why USB cannot be controlled here, or None."""
        bus = Path(self.root) / "bus" / "usb"
        if not bus.is_dir():
            return f"{bus} does not exist: no USB support in this kernel or sysfs not mounted"
        return None

    def path(self, sys_path: str) -> str:
        """libudev names devices under its /sys; map them to the configured sysfs root."""
        if self.root == self._udev_root or not sys_path.startswith(self._udev_root):
            return sys_path
        return self.root + sys_path[len(self._udev_root):]

    def usb_devices(self) -> list[Any]:
        return list(self.context.list_devices(subsystem="usb", DEVTYPE="usb_device"))

    def read(self, path: str, attr: str) -> str | None:
        try:
            raw = self._read(f"{path}/{attr}")
        except OSError:
            return None
        return raw.decode("utf-8", "replace").strip()

    def read_descriptors(self, path: str) -> bytes:
        # Raw bytes: the attribute holds NULs, where libudev's attribute getter stops.
        return self._read(f"{path}/descriptors")

    @staticmethod
    def _read(name: str) -> bytes:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: str, attr: str, value: str) -> None:
        # One open and one write, as the kernel's attribute store expects; no O_TRUNC
        # (meaningless on sysfs, and a costly path under umockdev).
        fd = os.open(f"{path}/{attr}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)

    def interfaces(self, path: str) -> list[tuple[int, int, str]]:
        """(configuration, interface number, path) of the interfaces sysfs has now."""
        out = []
        try:
            names = os.listdir(path)
        except OSError:
            return []
        for name in names:
            m = _INTERFACE_NAME.match(name)
            if m:
                out.append((int(m["cfg"]), int(m["num"]), f"{path}/{name}"))
        return sorted(out)

    def monitor(self) -> Any:
        mon = self.pyudev.Monitor.from_netlink(self.context, source="kernel")
        mon.filter_by("usb")
        mon.filter_by("block")
        try:
            # A burst of plugs (a hub full of devices) must not overflow the socket.
            mon.set_receive_buffer_size(RECEIVE_BUFFER)
        except OSError as exc:
            log.warning("could not enlarge the uevent receive buffer", error=str(exc))
        return mon


@dataclass
class Known:
    """What the control decided about a device it has seen."""

    path: str
    devnum: str | None
    identity: Identity
    recognition: Recognition
    decision: Decision
    authorized: bool  # what floorguard left the device at

    @property
    def keyboard(self) -> bool:
        return self.recognition.keyboard


@dataclass
class _Evidence:
    kind: str
    severity: str
    details: dict[str, Any]
    notify: tuple[str, str] | None = None  # title, body for the operator


_STOP: Any = object()


class UsbControl(Control):
    """Fail-closed USB device and interface authorization (see the module docstring)."""

    name = "usb"
    check_interval = 10.0

    def __init__(self, ctx: ControlContext, *, notify: Notify | None = None,
                 adapter: SysfsUsb | None = None):
        super().__init__(ctx)
        self.notify: Notify = notify or notify_user
        self.adapter = adapter
        self.rules = UsbRules()
        self.known: dict[str, Known] = {}
        self._lock = threading.RLock()
        self._evidence: queue.Queue[Any] = queue.Queue()
        self._monitor: Any = None
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = threading.Event()
        self.decisions = 0
        self.uevents = 0
        self.last_uevent: tuple[str, str] = ("", "")

    # -- lifecycle -------------------------------------------------------------------

    def start(self, policy: Policy) -> None:
        super().start(policy)
        self.rules = UsbRules.from_table(policy.get("usb"))
        if self.adapter is None:
            self.adapter = SysfsUsb(self.ctx.config.sysfs_root)
        why = self.adapter.available()
        if why:
            raise ControlUnavailable(why)
        # A thread waiting for the GIL gets it after at most this long: the default 5 ms
        # would let any CPU-bound work elsewhere in the agent (a process scan, a report)
        # sit between a uevent and its decision.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._writer = threading.Thread(target=self._evidence_loop, name="usb-evidence",
                                        daemon=True)
        self._writer.start()
        try:
            # Listen before looking: a device plugged while the present ones are judged
            # is then seen twice at worst (the second time is recognised), never missed.
            self._monitor = self.adapter.monitor()
            self._monitor.start()
            self._deny_by_default()
            self._reconcile(present=True, changes_only=False)
            self._wake_r, self._wake_w = os.pipe()
            self._thread = threading.Thread(target=self._monitor_loop, name="usb-monitor",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()  # no half-started threads; the kernel defaults stay deny
            raise
        self._write_pid_file()
        log.info("usb control started", mode=self.rules.mode, devices=len(self.known))

    def apply_policy(self, policy: Policy) -> None:
        super().apply_policy(policy)
        with self._lock:
            self.rules = UsbRules.from_table(policy.get("usb"))
            self._reconcile(present=True, changes_only=True)

    def stop(self) -> None:
        """Stops watching. Authorization stays as it is and the kernel defaults stay deny:
        the udev rule takes over for keyboards, mice and hubs."""
        self._stopping.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        self._evidence.put(_STOP)
        if self._writer is not None:
            self._writer.join(15)
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
                    self._emit(_Evidence("usb.blocked", "violation", {
                        **self._describe(known), "rule": BYPASS_RULE,
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
        action, subsystem = device.action, device.subsystem
        self.uevents += 1
        self.last_uevent = (action, device.sys_path)
        if subsystem == "usb":
            devtype = device.device_type
            if devtype == "usb_device":
                if action == "add":
                    self._device_added(device)
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

    def _device_added(self, device: Any) -> None:
        adapter = self._adapter()
        path = adapter.path(device.sys_path)
        if _is_root_hub(device.sys_name):
            self._deny_hub(path)
            return
        with self._lock:
            known = self.known.get(path)
            if known is not None and known.devnum == adapter.read(path, "devnum"):
                return  # already judged while the present devices were reconciled
            self._decide(path, device.sys_name, present=False)

    def _decide(self, path: str, port: str, *, present: bool,
                changes_only: bool = False) -> Known:
        adapter = self._adapter()
        rules = self.rules
        if present and rules.new_keyboard == "block":
            # Never lock out the keyboard the operator is typing on: at start a second
            # keyboard is reported, not blocked.
            rules = dataclasses.replace(rules, new_keyboard="warn")
        reason = ""
        desc: Descriptors | None
        try:
            desc = parse_descriptors(adapter.read_descriptors(path))
        except DescriptorError as exc:
            desc, reason = None, f"malformed descriptors: {exc}"
        except OSError as exc:
            desc, reason = None, f"cannot read the descriptors: {exc.strerror or exc}"
        # Only what the decision needs is read before it is written; the strings that
        # only the evidence needs are read afterwards.
        ident = self._identity(path, port, desc)
        if desc is None:
            recognition = Recognition("other", ())
            decision = Decision("blocked", INVALID_DESCRIPTORS, (), reason=reason)
        else:
            names = self._interface_names(path) if present else {}
            recognition = recognize(desc, names)
            others = any(k.keyboard and k.authorized and k.path != path
                         for k in self.known.values())
            decision = evaluate(rules, ident, desc, keyboard_present=others,
                                recognition=recognition)
        previous = self.known.get(path)
        authorized = self._apply(path, decision, present=present)
        ident = dataclasses.replace(
            ident, serial=ident.serial if ident.serial is not None
            else adapter.read(path, "serial"),
            manufacturer=adapter.read(path, "manufacturer"),
            product_name=adapter.read(path, "product"))
        known = Known(path, adapter.read(path, "devnum"), ident, recognition, decision,
                      authorized)
        self.known[path] = known
        self.decisions += 1
        if changes_only and previous is not None and previous.decision == decision:
            return known
        self._emit(self._evidence_for(known, present=present,
                                      previous=previous.decision if previous else None))
        return known

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
        m = _INTERFACE_NAME.match(device.sys_name)
        if not m:
            return
        adapter = self._adapter()
        ipath = adapter.path(device.sys_path)
        with self._lock:
            known = self.known.get(os.path.dirname(ipath))
            if known is None or not known.authorized:
                return
            allowed = (self.rules.mode == "audit"
                       or (int(m["cfg"]), int(m["num"])) in known.decision.allowed_interfaces)
            if allowed and adapter.read(ipath, "authorized") != "1":
                self._set(ipath, "1")

    def _device_removed(self, device: Any) -> None:
        path = self._adapter().path(device.sys_path)
        with self._lock:
            known = self.known.pop(path, None)
        if known is None:
            return
        self._emit(_Evidence("usb.removed", "info", {
            **self._describe(known), "verdict": known.decision.verdict,
            "rule": known.decision.rule}))

    def _block_added(self, device: Any) -> None:
        parent = device.find_parent("usb", "usb_device")
        if parent is None:
            return  # not on USB
        adapter = self._adapter()
        ppath = adapter.path(parent.sys_path)
        iface = device.find_parent("usb", "usb_interface")
        m = _INTERFACE_NAME.match(iface.sys_name) if iface is not None else None
        slot = (int(m["cfg"]), int(m["num"])) if m else None
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
                details.update(self._describe(known))
        self._emit(_Evidence("usb.blocked", "violation", details,
                             notify=None if audit else self._notice(details)))

    def _reconcile(self, *, present: bool, changes_only: bool) -> None:
        adapter = self._adapter()
        devices = [d for d in adapter.usb_devices() if not _is_root_hub(d.sys_name)]

        def order(d: Any) -> tuple[int, int, str]:
            p = adapter.path(d.sys_path)
            return (_int(adapter.read(p, "busnum")), _int(adapter.read(p, "devnum")),
                    d.sys_name)

        with self._lock:
            seen = set()
            for d in sorted(devices, key=order):
                path = adapter.path(d.sys_path)
                seen.add(path)
                try:
                    self._decide(path, d.sys_name, present=present, changes_only=changes_only)
                except Exception:
                    log.exception("judging a present USB device failed", path=path)
            for gone in set(self.known) - seen:
                self.known.pop(gone, None)

    # -- root hubs -------------------------------------------------------------------

    def _deny_by_default(self) -> None:
        adapter = self._adapter()
        for d in adapter.usb_devices():
            if _is_root_hub(d.sys_name):
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
            vendor, product = _hex(read(path, "idVendor")), _hex(read(path, "idProduct"))
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

    def _describe(self, known: Known) -> dict[str, Any]:
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

    def _evidence_for(self, known: Known, *, present: bool,
                      previous: Decision | None) -> _Evidence:
        d = known.decision
        audit = self.rules.mode == "audit"
        details = {
            **self._describe(known), "verdict": d.verdict, "rule": d.rule,
            "mode": self.rules.mode, "authorized": known.authorized, "present": present,
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
            return _Evidence("usb.blocked", "violation", details,
                             notify=None if audit else self._notice(details))
        if d.verdict == "partial":
            details["blocked_interfaces"] = [i.as_event() for i in d.blocked_interfaces]
            return _Evidence("usb.allowed", "warning", details)
        return _Evidence("usb.allowed", "warning" if d.new_keyboard else "info", details)

    def _notice(self, details: dict[str, Any]) -> tuple[str, str] | None:
        if not self.rules.notify:
            return None
        what = details.get("product_name") or details.get("id") or "a USB device"
        return ("USB device blocked",
                f"The floor policy blocked {what} ({details.get('recognition', 'device')}) "
                f"on port {details.get('port')}. This has been recorded.")

    def _emit(self, evidence: _Evidence) -> None:
        self._evidence.put(evidence)

    def _evidence_loop(self) -> None:
        while True:
            item = self._evidence.get()
            if item is _STOP:
                return
            if isinstance(item, _Marker):
                item.done.set()
                continue
            try:
                self._record(item)
            except Exception:
                log.exception("recording a USB decision failed")

    def _record(self, ev: _Evidence) -> None:
        try:
            # Warnings and violations return only once durable (the journal's rule).
            self.record(ev.kind, ev.severity, ev.details)
        except JournalError as exc:
            log.error("USB decision not recorded; the device stays as decided",
                      kind=ev.kind, port=ev.details.get("port"), error=str(exc))
            return
        log.info("usb decision", kind=ev.kind, severity=ev.severity,
                 port=ev.details.get("port"), id=ev.details.get("id"),
                 rule=ev.details.get("rule"))
        if ev.notify is not None:
            user = self.ctx.operator.current()
            try:
                self.notify(user, *ev.notify)
            except Exception:
                log.exception("notifying the operator failed", user=user)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every decision so far is recorded (tests and shutdown use it)."""
        marker = _Marker(threading.Event())
        self._evidence.put(marker)
        if not marker.done.wait(timeout):
            raise TimeoutError("USB decisions were not recorded in time")

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


@dataclass
class _Marker:
    done: threading.Event


def _is_root_hub(sys_name: str) -> bool:
    return sys_name.startswith("usb")


def _int(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return 0


def _hex(text: str | None) -> int:
    try:
        return int(text or "0", 16)
    except ValueError:
        return 0
