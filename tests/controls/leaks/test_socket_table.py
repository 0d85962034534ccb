"""The network control's view of the kernel's TCP table (sock_diag netlink), on loopback."""

from __future__ import annotations

import os
import socket

from floorguard.agent.controls.network.control import read_tcp, socket_owners
from floorguard.agent.controls.network.rules import outbound


def test_connections_are_read_with_their_inode_and_known_ones_are_not_parsed_again() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        sport = server.getsockname()[1]
        cport = client.getsockname()[1]
        inode = os.fstat(client.fileno()).st_ino
        sockets, present = read_tcp()
        mine = [s for s in sockets if s.lport == cport and s.rport == sport]
        assert len(mine) == 1
        assert (mine[0].inode, mine[0].state, str(mine[0].remote)) == (inode, "01", "127.0.0.1")
        assert mine[0].uid == os.getuid()
        assert [s for s in sockets if s.lport == sport and s.state == "0A"]
        # the accepted end is inbound, the client end is egress
        out = {(s.lport, s.rport) for s in outbound(sockets)}
        assert (cport, sport) in out
        assert (sport, cport) not in out
        assert inode in present
        again, present_again = read_tcp(known={inode})
        assert not [s for s in again if s.inode == inode]
        assert inode in present_again
        # the process holding it is found by walking open files, only of the socket's owner
        assert socket_owners({inode}, {os.getuid()}) == {inode: os.getpid()}
        assert socket_owners({inode}, {os.getuid() + 12345}) == {}
    finally:
        for s in (accepted, client, server):
            s.close()
