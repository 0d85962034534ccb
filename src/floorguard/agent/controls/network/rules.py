"""The network control's rules: which interfaces a PC may have and which outbound
connections the allow-list permits. Plain functions on plain data.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from dataclasses import dataclass

from floorguard.policy import EgressRule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"


@dataclass(frozen=True)
class TcpSocket:
    """One row of /proc/net/tcp{,6}."""

    local: IPAddress
    lport: int
    remote: IPAddress
    rport: int
    state: str
    uid: int
    inode: int


def interface_allowed(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


@functools.lru_cache(maxsize=1024)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def egress_allowed(addr: IPAddress, port: int, rules: tuple[EgressRule, ...]) -> bool:
    for rule in rules:
        net = _network(rule.net)
        if addr.version == net.version and addr in net and (not rule.ports
                                                              or port in rule.ports):
            return True
    return False


def outbound(sockets: list[TcpSocket]) -> list[TcpSocket]:
    """Established connections this PC opened: not those accepted on a listening port."""
    listening = {(s.local, s.lport) for s in sockets if s.state == TCP_LISTEN}
    wildcard_ports = {s.lport for s in sockets
                      if s.state == TCP_LISTEN and s.local.is_unspecified}
    return [s for s in sockets if s.state == TCP_ESTABLISHED and not s.remote.is_unspecified
            and (s.local, s.lport) not in listening and s.lport not in wildcard_ports]


