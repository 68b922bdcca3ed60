"""NFLOG reader (standard library only): the egress rule's log groups as records with the
sending socket's uid/gid and the packet's addresses and ports.

Netlink protocol NETLINK_NETFILTER, subsystem NFNL_SUBSYS_ULOG. We bind one group per socket
(``NFULNL_CFG_CMD_BIND``) and ask for the first 128 bytes of each packet (IP + TCP headers).
Only one process can bind a group: if ulogd holds it, binding fails with a clear error.
The socket lives in the network namespace it was created in (see :mod:`.netns`).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass

from mailwarden.egress.netns import in_netns

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH = 1, 2, 4, 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD, NFULA_PREFIX, NFULA_UID, NFULA_GID = 9, 10, 11, 14


class NflogError(Exception):
    """The NFLOG group cannot be bound (no privilege, group taken, no kernel support)."""


@dataclass(frozen=True, slots=True)
class NflogRecord:
    ts: float
    group: int
    prefix: str
    uid: int | None
    gid: int | None
    family: int  # 4 or 6
    saddr: str
    daddr: str
    sport: int | None
    dport: int | None
    proto: int


def _nla(t: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * ((4 - n % 4) % 4)


def _cfg(group: int, attr: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + attr
    hdr = struct.pack(
        "=IHHII",
        16 + len(body),
        (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
    )
    return hdr + body


def parse_packet(payload: bytes) -> tuple[int, str, str, int | None, int | None, int]:
    """(family, saddr, daddr, sport, dport, proto) from the start of an IP packet."""
    if not payload:
        raise ValueError("empty payload")
    ver = payload[0] >> 4
    if ver == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0xF) * 4
        proto = payload[9]
        src = str(ipaddress.IPv4Address(payload[12:16]))
        dst = str(ipaddress.IPv4Address(payload[16:20]))
        l4 = payload[ihl:]
        fam = 4
    elif ver == 6 and len(payload) >= 40:
        proto = payload[6]
        src = str(ipaddress.IPv6Address(payload[8:24]))
        dst = str(ipaddress.IPv6Address(payload[24:40]))
        l4 = payload[40:]
        fam = 6
    else:
        raise ValueError(f"not an IP packet (version {ver}, {len(payload)} bytes)")
    if proto in (6, 17) and len(l4) >= 4:
        sport, dport = struct.unpack("!HH", l4[:4])
        return fam, src, dst, sport, dport, proto
    return fam, src, dst, None, None, proto


def parse_messages(data: bytes, group: int, now: float) -> tuple[list[NflogRecord], int]:
    """Parse one recv() worth of netlink messages. Returns (records, malformed count)."""
    out: list[NflogRecord] = []
    bad = 0
    off = 0
    while off + 16 <= len(data):
        length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16 or off + length > len(data):
            bad += 1
            break
        if mtype == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            attrs: dict[int, bytes] = {}
            a = off + 16 + 4  # nlmsghdr + nfgenmsg
            end = off + length
            while a + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4 or a + alen > end:
                    break
                attrs[atype & 0x7FFF] = data[a + 4 : a + alen]
                a += (alen + 3) & ~3
            try:
                fam, src, dst, sp, dp, proto = parse_packet(attrs.get(NFULA_PAYLOAD, b""))
            except ValueError:
                bad += 1
            else:
                uid = struct.unpack("!I", attrs[NFULA_UID])[0] if NFULA_UID in attrs else None
                gid = struct.unpack("!I", attrs[NFULA_GID])[0] if NFULA_GID in attrs else None
                prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("ascii", "replace")
                out.append(
                    NflogRecord(now, group, prefix.strip(), uid, gid, fam, src, dst, sp, dp, proto)
                )
        off += (length + 3) & ~3
    return out, bad


class NflogReader:
    """Reads one NFLOG group. ``fileno()`` for select; :meth:`read` returns what is waiting."""

    def __init__(self, group: int, *, netns: str | None = None, rcvbuf: int = 8 << 20) -> None:
        self.group = group
        self.netns = netns
        self.lost = 0  # ENOBUFS: the kernel dropped records because we were too slow
        self.malformed = 0
        self.sock = in_netns(netns, lambda: self._open(rcvbuf))

    def _open(self, rcvbuf: int) -> socket.socket:
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise NflogError(f"cannot open netfilter netlink socket: {exc.strerror}") from exc
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((0, 0))
        self._config(s, _nla(NFULA_CFG_CMD, struct.pack("=B3x", NFULNL_CFG_CMD_BIND)), 1, "bind")
        mode = struct.pack("!IBx", 128, NFULNL_COPY_PACKET) + b"\0\0"
        self._config(s, _nla(NFULA_CFG_MODE, mode), 2, "set copy mode")
        # The kernel batches up to 100 records or 1 s by default: deliver each one at once.
        self._config(s, _nla(NFULA_CFG_QTHRESH, struct.pack("!I", 1)), 3, "set queue threshold")
        self._config(s, _nla(NFULA_CFG_TIMEOUT, struct.pack("!I", 1)), 4, "set flush timeout")
        s.setblocking(False)
        return s

    def _config(self, s: socket.socket, attr: bytes, seq: int, what: str) -> None:
        s.send(_cfg(self.group, attr, seq))
        s.settimeout(2.0)
        data = s.recv(65536)
        _length, mtype = struct.unpack_from("=IH", data, 0)
        if mtype == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, 16)
            if err != 0:
                s.close()
                hint = (
                    " (another process, e.g. ulogd, holds this group?)"
                    if -err == errno.EBUSY
                    else ""
                )
                raise NflogError(
                    f"NFLOG group {self.group}: {what} failed: "
                    f"{errno.errorcode.get(-err, err)}{hint}"
                )

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[NflogRecord]:
        out: list[NflogRecord] = []
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            recs, bad = parse_messages(data, self.group, time.time())
            self.malformed += bad
            out += recs

    def close(self) -> None:
        self.sock.close()
