"""sock_diag poller (standard library only): the fallback collector where eBPF cannot load.

Each poll asks the kernel (NETLINK_SOCK_DIAG, ``SOCK_DIAG_BY_FAMILY``) for the TCP sockets of
both families whose destination port is watched; the port filter runs in the kernel as
``INET_DIAG_REQ_BYTECODE`` so the cost does not grow with the number of other sockets. New
sockets (by inode) are reported once, their pid resolved through ``/proc/*/fd`` only for them.
Polling cannot see connections shorter than the interval: it is a fallback, not an audit trail.
Works unprivileged for uid + addresses; resolving other users' pids needs root.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailwarden.egress import validate as v
from mailwarden.egress.netns import in_netns

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_D_EQ = 1, 12
TCP_LISTEN, TCP_TIME_WAIT = 10, 6
STATES = (0xFFF & ~(1 << TCP_LISTEN)) & ~(1 << TCP_TIME_WAIT)
STATE_NAMES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}


@dataclass(frozen=True, slots=True)
class DiagSocket:
    family: int  # 4 or 6
    state: str
    saddr: str
    sport: int
    daddr: str
    dport: int
    uid: int
    inode: int
    netns: str | None = None
    pid: int | None = None


def dport_filter(ports: Iterable[int]) -> bytes:
    """Bytecode accepting sockets whose dport is one of ``ports`` (laid out as ss does for OR:
    each condition's *yes* falls to a JMP to the end, its *no* skips to the next condition)."""
    ps = list(ports)
    n = len(ps)
    total = 12 * (n - 1) + 8
    out = b""
    for i, p in enumerate(ps):
        out += struct.pack("=BBH", INET_DIAG_BC_D_EQ, 8, 12) + struct.pack("=BBH", 0, 0, p)
        if i < n - 1:
            out += struct.pack("=BBH", INET_DIAG_BC_JMP, 4, total - (12 * i + 8))
    return out


def _request(family: int, bytecode: bytes, seq: int) -> bytes:
    req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, STATES) + b"\0" * 48
    body = req + struct.pack("=HH", 4 + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    return (
        struct.pack(
            "=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
        )
        + body
    )


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    a = ipaddress.IPv6Address(raw[:16])
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


def dump(sock: socket.socket, ports: Iterable[int], netns: str | None = None) -> list[DiagSocket]:
    """One sock_diag dump of both families, filtered in the kernel by destination port."""
    bc = dport_filter(sorted(ports))
    out: list[DiagSocket] = []
    for seq, fam in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
        sock.send(_request(fam, bc, seq))
        done = False
        while not done:
            data = sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if length < 16:
                    done = True
                    break
                if mtype == NLMSG_DONE:
                    done = True
                elif mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    raise OSError(-err, f"sock_diag: {os.strerror(-err)}")
                elif mtype == SOCK_DIAG_BY_FAMILY and length >= 16 + 72:
                    m = off + 16
                    family, state = data[m], data[m + 1]
                    sport, dport = struct.unpack_from("!HH", data, m + 4)
                    uid, inode = struct.unpack_from("=II", data, m + 64)
                    out.append(
                        DiagSocket(
                            4 if family == socket.AF_INET else 6,
                            STATE_NAMES.get(state, str(state)),
                            _addr(family, data[m + 8 : m + 24]),
                            sport,
                            _addr(family, data[m + 24 : m + 40]),
                            dport,
                            uid,
                            inode,
                            netns,
                        )
                    )
                off += (length + 3) & ~3
    return out


def pids_of_inodes(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, int]:
    """Map socket inodes to the pid holding them (first found), scanning /proc/*/fd."""
    want = {f"socket:[{i}]": i for i in inodes if i}
    found: dict[int, int] = {}
    if not want:
        return found
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        fd_dir = f"{entry.path}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            ino = want.get(target)
            if ino is not None and ino not in found:
                found[ino] = int(entry.name)
                if len(found) == len(want):
                    return found
    return found


class SockDiagPoller:
    """Reports each new watched-port TCP socket once (by inode), with its pid when found."""

    def __init__(
        self,
        ports: Iterable[int] = (25, 465, 587, 2525),
        *,
        netns: str | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        self.ports = v.ports(ports)
        self.netns = netns
        self.proc = proc
        self.sock = in_netns(netns, self._open)
        self._seen: dict[int, float] = {}

    @staticmethod
    def _open() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        s.bind((0, 0))
        return s

    def set_ports(self, ports: Iterable[int]) -> None:
        self.ports = v.ports(ports)

    def snapshot(self) -> list[DiagSocket]:
        """All matching sockets now (no pid resolution)."""
        return dump(self.sock, self.ports, self.netns)

    def poll(self) -> list[DiagSocket]:
        now = time.monotonic()
        new = [s for s in self.snapshot() if s.inode and s.inode not in self._seen]
        for s in new:
            self._seen[s.inode] = now
        if len(self._seen) > 100_000:  # forget inodes not seen for 10 minutes
            self._seen = {i: t for i, t in self._seen.items() if now - t < 600}
        if not new:
            return []
        pids = pids_of_inodes({s.inode for s in new}, self.proc)
        return [
            DiagSocket(
                s.family,
                s.state,
                s.saddr,
                s.sport,
                s.daddr,
                s.dport,
                s.uid,
                s.inode,
                s.netns,
                pids.get(s.inode),
            )
            for s in new
        ]

    def close(self) -> None:
        self.sock.close()
