"""The network control: new ways onto a network, and connections outside the allow-list.

Policy table ``[network]``:

- ``interfaces`` (globs, default ``["lo"]``): the network interfaces this PC may have.
  Any other interface (USB tethering ``usb0``/``enx...``, Wi-Fi ``wl...``, a VPN tunnel
  ``tun0``/``wg0``, a veth or bridge) is a ``network.interface`` violation when it appears,
  or at start when it is already there. An interface that goes and comes back is judged
  again.
- ``check_interval`` (default ``"5s"``): how often interfaces and connections are read.
- ``[[network.egress]]`` entries (``net`` = an address or CIDR, ``ports`` = a list, empty
  for any port, ``note``): the allow-list of destinations. When at least one entry exists,
  every established outbound TCP connection (IPv4 and IPv6) to any other destination is a
  ``network.flagged`` warning naming the program that made it (pid, executable, command
  line, user), once per (process, destination). Without entries no connection is judged.
  Loopback is judged like any other destination: allow ``127.0.0.0/8`` and ``::1`` if
  local services are fine.

The control only observes: it never changes routes, firewall rules or traffic. It reads
the kernel's connection tables (``/proc/net/tcp``, ``/proc/net/tcp6``) every round, which is
cheap; finding the program behind a connection means walking every process's open files,
so that is done only when a connection not seen before breaks the allow-list. Inbound
connections (to a port this PC listens on) are not egress and are not judged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from pathlib import Path
from typing import Any, ClassVar

import psutil
import structlog

from floorguard.agent.controls.base import Control, ControlContext, ControlUnavailable
from floorguard.agent.controls.network.rules import (
    TCP_ESTABLISHED,
    TCP_LISTEN,
    IPAddress,
    TcpSocket,
    egress_allowed,
    interface_allowed,
    outbound,
)
from floorguard.agent.periodic import Periodic
from floorguard.policy import NetworkSettings, Policy

log = structlog.get_logger("floorguard.network")


# --- pure decisions -----------------------------------------------------------------------


def _addr(hexaddr: str) -> IPAddress:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # IPv6 is four 32-bit words, each in host (little-endian) order.
    v6 = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return v6.ipv4_mapped or v6


def parse_proc_net_tcp(text: str) -> list[TcpSocket]:
    """Parse /proc/net/tcp or tcp6; malformed rows are skipped."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        try:
            la, lp = f[1].split(":")
            ra, rp = f[2].split(":")
            out.append(TcpSocket(local=_addr(la), lport=int(lp, 16), remote=_addr(ra),
                                 rport=int(rp, 16), state=f[3].upper(), uid=int(f[7]),
                                 inode=int(f[9])))
        except (IndexError, ValueError):
            continue
    return out


# --- OS adapters --------------------------------------------------------------------------


# The kernel's socket-diagnostics netlink interface (linux/inet_diag.h; what ``ss`` uses).
# Reading /proc/net/tcp walks the kernel's whole connection hash table, about 10 ms a read
# on a large machine; a sock_diag dump of only the states asked for costs well under 1 ms.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI48s")  # family, protocol, ext, pad, states, sockid
_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # inet_diag_msg
_STATES = (1 << 1) | (1 << 10)  # TCP_ESTABLISHED, TCP_LISTEN


def _diag_dump(family: int, known: set[int], present: set[int]) -> list[TcpSocket]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                       NETLINK_SOCK_DIAG) as sock:
        body = _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, _STATES, b"\0" * 48)
        sock.sendto(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                                   NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body, (0, 0))
        out: list[TcpSocket] = []
        size = 4 if family == socket.AF_INET else 16
        while True:
            data = sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off + _NLMSGHDR.size)[0]
                    raise OSError(code, f"sock_diag: {os.strerror(code)}")
                if kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _MSG.size:
                    (_fam, state, _t, _r, sport, dport, src, dst, _if, _cookie, _exp, _rq,
                     _wq, uid, inode) = _MSG.unpack_from(data, off + _NLMSGHDR.size)
                    if state == 1:
                        present.add(inode)
                    if state == 1 and inode in known:
                        # judged in an earlier round: a busy machine holds thousands of
                        # connections, and building addresses for each is the real cost
                        off += (length + 3) & ~3
                        continue
                    local = ipaddress.ip_address(src[:size])
                    remote = ipaddress.ip_address(dst[:size])
                    out.append(TcpSocket(local=_unmap(local), lport=int.from_bytes(sport, "big"),
                                         remote=_unmap(remote),
                                         rport=int.from_bytes(dport, "big"),
                                         state=f"{state:02X}", uid=uid, inode=inode))
                if length == 0:
                    break
                off += (length + 3) & ~3


def _unmap(a: IPAddress) -> IPAddress:
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
        return a.ipv4_mapped
    return a


def read_tcp(proc_net: str = "/proc/net", known: frozenset[int] | set[int] = frozenset()
             ) -> tuple[list[TcpSocket], set[int]]:
    """Listening TCP sockets and established ones whose inode is not in ``known``, of this
    network namespace, both families; and the inodes of all established ones. Through
    sock_diag, or /proc/net/tcp{,6} where the kernel has no inet_diag."""
    known = set(known)
    present: set[int] = set()
    try:
        found = _diag_dump(socket.AF_INET, known, present)
        return found + _diag_dump(socket.AF_INET6, known, present), present
    except OSError:
        present.clear()
    out: list[TcpSocket] = []
    for name in ("tcp", "tcp6"):
        try:
            out += parse_proc_net_tcp(Path(proc_net, name).read_text())
        except OSError:
            continue  # no IPv6 in this kernel
    present = {s.inode for s in out if s.state == TCP_ESTABLISHED}
    return [s for s in out if s.state == TCP_LISTEN or s.inode not in known], present


def interface_facts(name: str, index: int) -> dict[str, Any]:
    """What the event says about an interface: addresses, MAC, state, and from sysfs (when
    sysfs shows this network namespace) its type and whether it hangs off USB."""
    facts: dict[str, Any] = {"interface": name, "index": index}
    addrs = psutil.net_if_addrs().get(name, [])
    facts["addresses"] = sorted(a.address for a in addrs
                                if a.family in (socket.AF_INET, socket.AF_INET6))
    macs = [a.address for a in addrs if a.family == psutil.AF_LINK]
    facts["mac"] = macs[0] if macs else None
    stats = psutil.net_if_stats().get(name)
    facts["up"] = bool(stats.isup) if stats else None
    sys_dir = Path("/sys/class/net", name)
    try:
        if int((sys_dir / "ifindex").read_text()) == index:
            uevent = dict(line.split("=", 1) for line in
                          (sys_dir / "uevent").read_text().splitlines() if "=" in line)
            facts["type"] = uevent.get("DEVTYPE") or ("wireless" if (sys_dir / "wireless")
                                                      .exists() else None)
            facts["usb"] = "/usb" in os.path.realpath(sys_dir / "device")
    except (OSError, ValueError):
        pass
    return facts


def socket_owners(inodes: set[int], uids: set[int], proc: str = "/proc") -> dict[int, int]:
    """The pid holding each socket inode. The kernel has no index from socket to process,
    so this walks processes' open files (as ``ss -p`` does), but only those of the
    sockets' owners, newest first (a new connection is most often a new process's), and
    stops as soon as every socket is found."""
    want = {f"socket:[{i}]": i for i in inodes if i}
    found: dict[int, int] = {}
    pids = sorted((int(n) for n in os.listdir(proc) if n.isdigit()), reverse=True)
    for pid in pids:
        if not want:
            break
        try:
            if os.stat(f"{proc}/{pid}").st_uid not in uids:
                continue
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = want.pop(target, None)
            if inode is not None:
                found[inode] = pid
    return found


# --- the control --------------------------------------------------------------------------


class NetworkControl(Control):
    """New network interfaces and egress outside the allow-list; observes, never acts."""

    name: ClassVar[str] = "network"
    check_interval: ClassVar[float] = 60.0

    def __init__(self, ctx: ControlContext, *, proc_net: str = "/proc/net"):
        super().__init__(ctx)
        self.settings = NetworkSettings()
        self._proc_net = proc_net
        self._interfaces: dict[str, int] | None = None  # None until the first round
        self._seen_sockets: set[int] = set()
        self._reported_ifaces: set[tuple[str, int]] = set()
        self._rejudge = False
        self._flagged: set[tuple[Any, ...]] = set()
        self._loop = Periodic("network-scan", self.scan, lambda: self.settings.check_interval,
                              wait_first=True)
        self.rounds = 0

    def start(self, policy: Policy) -> None:
        super().start(policy)
        self.settings = policy.settings(NetworkSettings)
        try:
            socket.if_nameindex()
        except OSError as exc:
            raise ControlUnavailable(f"cannot list network interfaces: {exc}") from exc
        # What is present now is judged before the agent reports itself ready, so
        # "present at start" means exactly that.
        self.scan()
        self._loop.start()

    def apply_policy(self, policy: Policy) -> None:
        super().apply_policy(policy)
        self.settings = policy.settings(NetworkSettings)
        self._rejudge = True  # connections by the new allow-list on the next round
        self._loop.wake()

    def stop(self) -> None:
        self._loop.stop()

    def status(self) -> dict[str, Any]:
        return {"interfaces": sorted(self._interfaces or {}), "rounds": self.rounds}

    def scan(self) -> None:
        """One round: interfaces, then (with an allow-list) connections."""
        self._scan_interfaces()
        if self.settings.egress:
            self._scan_connections()
        self.rounds += 1

    def _scan_interfaces(self) -> None:
        now = {name: index for index, name in socket.if_nameindex()}
        first = self._interfaces is None
        # Reported once per appearance: an interface that goes and comes back (a new
        # index) is judged again; one a new policy forbids is judged at the next round.
        self._reported_ifaces &= set(now.items())
        for name, index in sorted(now.items()):
            if (name, index) in self._reported_ifaces:
                continue
            if interface_allowed(name, self.settings.interfaces):
                continue
            self._reported_ifaces.add((name, index))
            operator = self.ctx.operator.current()
            self.record("network.interface", "violation", {
                **interface_facts(name, index), "present_at_start": first,
                "allowed": list(self.settings.interfaces), "operator": operator,
            }, user=operator)
        self._interfaces = now

    def _scan_connections(self) -> None:
        rules = self.settings.egress
        if self._rejudge:
            self._rejudge = False
            self._seen_sockets = set()
        sockets, present = read_tcp(self._proc_net, self._seen_sockets)
        fresh = [s for s in outbound(sockets) if not egress_allowed(s.remote, s.rport, rules)]
        self._seen_sockets = present
        if not fresh:
            return
        holders = socket_owners({s.inode for s in fresh}, {s.uid for s in fresh})
        live_pids = set(psutil.pids())
        self._flagged = {k for k in self._flagged if k[0] is None or k[0] in live_pids}
        for s in fresh:
            facts = _process_facts(holders.get(s.inode), s.uid)
            key = (facts["pid"], str(s.remote), s.rport)
            if key in self._flagged:
                continue
            self._flagged.add(key)
            self.record("network.flagged", "warning", {
                **facts, "remote": str(s.remote), "port": s.rport, "local": str(s.local),
                "local_port": s.lport, "protocol": "tcp" if s.remote.version == 4 else "tcp6",
                "operator": self.ctx.operator.current(),
            }, user=facts["user"])


def _process_facts(pid: int | None, uid: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"pid": None, "name": None, "exe": None, "cmdline": [],
                             "user": _user(uid)}
    if pid is None:
        return facts
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            facts.update(pid=proc.pid, name=proc.name(), cmdline=proc.cmdline()[:32],
                         user=proc.username())
            with contextlib.suppress(psutil.AccessDenied):
                facts["exe"] = proc.exe()
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        pass
    return facts


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
