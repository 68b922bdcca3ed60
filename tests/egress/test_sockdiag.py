"""The sock_diag fallback: a connection held 300 ms is seen with its uid and pid; the kernel
port filter keeps other sockets out; the bytecode layout is the one the kernel accepts."""

from __future__ import annotations

import json
import pwd
import socket
import struct
import time

import pytest

from mailwarden.egress.sockdiag import SockDiagPoller, dport_filter

from .conftest import EgressNet, requires_net

PY = "/usr/bin/python3"


@pytest.mark.root
@requires_net
@pytest.mark.parametrize("family", [4, 6])
def test_connection_held_300ms_is_seen_with_uid_and_pid(egress_net: EgressNet, family: int) -> None:
    net = egress_net
    host = net.b4 if family == 4 else net.b6
    poller = SockDiagPoller([25, 465, 587], netns=net.a)
    try:
        p = net.popen_as("www-data", [PY, str(net.clients / "hold.py"), host, "465", "0.3"])
        seen = []
        deadline = time.monotonic() + 5
        while p.poll() is None and time.monotonic() < deadline:
            seen += poller.poll()
            time.sleep(0.1)
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        client = json.loads(out)
    finally:
        poller.close()
    assert len(seen) == 1  # reported once, not on every poll
    s = seen[0]
    assert s.uid == pwd.getpwnam("www-data").pw_uid
    assert s.pid == client["pid"]
    assert (s.daddr, s.dport, s.family) == (host, 465, family)
    assert s.state in ("SYN_SENT", "ESTABLISHED")  # IPv6 neighbour discovery may still run


def test_kernel_filter_returns_only_watched_ports() -> None:
    listeners = []
    conns = []
    try:
        for _ in range(2):
            ls = socket.socket()
            ls.bind(("127.0.0.1", 0))
            ls.listen()
            listeners.append(ls)
        watched, other = (ls.getsockname()[1] for ls in listeners)
        conns = [socket.create_connection(("127.0.0.1", watched)) for _ in range(3)]
        conns += [socket.create_connection(("127.0.0.1", other)) for _ in range(5)]
        p = SockDiagPoller([watched])
        snap = p.snapshot()
        new = p.poll()
        again = p.poll()
        p.close()
    finally:
        for s in conns + listeners:
            s.close()
    assert {s.dport for s in snap} == {watched}
    assert len(snap) == 3 and len(new) == 3 and again == []
    assert all(s.pid is not None for s in new)


def test_bytecode_layout() -> None:
    bc = dport_filter([25, 587])
    # cond(25) yes->+8 no->+12, port; jmp to end; cond(587) yes->+8 no->+12, port
    assert bc == (
        struct.pack("=BBH", 12, 8, 12)
        + struct.pack("=BBH", 0, 0, 25)
        + struct.pack("=BBH", 1, 4, 12)
        + struct.pack("=BBH", 12, 8, 12)
        + struct.pack("=BBH", 0, 0, 587)
    )
