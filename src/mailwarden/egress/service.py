"""``mailwarden egress run``: the privileged collector process.

It starts the collectors that work here (eBPF first; the NFLOG readers of the egress rule's two
groups; the sock_diag poller when eBPF is unavailable), attributes and enriches every event at
once, joins eBPF events with the rule's NFLOG verdict (same uid, destination and port, within
``verdict_wait``), and publishes the result on a unix socket as JSON lines (see
:mod:`mailwarden.egress.wire`) to any number of unprivileged readers. It never writes the store.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from mailwarden.config import EgressSettings
from mailwarden.egress import validate as v
from mailwarden.egress.attribute import Attributor, is_remote
from mailwarden.egress.enrich import load_tables
from mailwarden.egress.firewall import VERDICT_OF_PREFIX
from mailwarden.egress.wire import VERSION, encode, encode_msg
from mailwarden.events import EgressConnect

log = logging.getLogger("mailwarden.egress")
MAX_CLIENT_BUFFER = 16 << 20
STATS_EVERY = 10.0


@dataclass
class _Client:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)


class Publisher:
    """Unix-socket server fanning JSON lines out to readers; slow readers are dropped."""

    def __init__(self, path: str, *, group: str = "", hello: bytes = b"") -> None:
        self.path = path
        self.hello = hello
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        # Readers are the socket's group: [egress] socket_group, or the service's own group
        # when it runs under one (systemd Group=); root-only otherwise.
        mode = 0o660 if os.getegid() != 0 else 0o600
        if group:
            try:
                os.chown(path, -1, grp.getgrnam(group).gr_gid)
            except (KeyError, OSError) as exc:
                raise RuntimeError(f"cannot give {path} to group {group!r}: {exc}") from exc
            mode = 0o660
        os.chmod(path, mode)
        self.server.listen(64)
        self.server.setblocking(False)
        self.clients: dict[int, _Client] = {}

    def accept(self) -> None:
        try:
            s, _ = self.server.accept()
        except BlockingIOError:
            return
        s.setblocking(False)
        c = _Client(s)
        self.clients[s.fileno()] = c
        self._send(c, self.hello)

    def publish(self, data: bytes) -> None:
        for c in list(self.clients.values()):
            self._send(c, data)

    def _send(self, c: _Client, data: bytes) -> None:
        c.buf += data
        try:
            while c.buf:
                n = c.sock.send(c.buf)
                del c.buf[:n]
        except BlockingIOError:
            if len(c.buf) > MAX_CLIENT_BUFFER:
                log.warning("egress: dropping a reader that is %d bytes behind", len(c.buf))
                self._drop(c)
        except OSError:
            self._drop(c)

    def flush(self) -> None:
        for c in list(self.clients.values()):
            if c.buf:
                self._send(c, b"")

    def _drop(self, c: _Client) -> None:
        self.clients.pop(c.sock.fileno(), None)
        c.sock.close()

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._drop(c)
        self.server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


_Key = tuple[int | None, str, int]


class _Fifo:
    """Items waiting for a partner, oldest first, findable by key in O(1)."""

    def __init__(self) -> None:
        self.seq = 0
        self.order: OrderedDict[int, tuple[float, _Key, EgressConnect]] = OrderedDict()
        self.by_key: dict[_Key, deque[int]] = {}

    def push(self, key: _Key, t: float, item: EgressConnect) -> None:
        self.seq += 1
        self.order[self.seq] = (t, key, item)
        self.by_key.setdefault(key, deque()).append(self.seq)

    def take(self, key: _Key) -> EgressConnect | None:
        q = self.by_key.get(key)
        if not q:
            return None
        seq = q.popleft()
        if not q:
            del self.by_key[key]
        return self.order.pop(seq)[2]

    def expired(self, now: float, wait: float) -> list[EgressConnect]:
        out: list[EgressConnect] = []
        while self.order:
            seq, (t, key, item) = next(iter(self.order.items()))
            if now - t < wait:
                break
            self.order.popitem(last=False)
            q = self.by_key[key]
            q.remove(seq)  # it is the oldest of its key: at the left, O(1) in practice
            if not q:
                del self.by_key[key]
            out.append(item)
        return out

    def __len__(self) -> int:
        return len(self.order)


def _join_key(ev: EgressConnect) -> _Key:
    """What netfilter and the tracepoint both know: the socket's owner and the destination."""
    return (ev.uid if ev.sk_uid is None else ev.sk_uid, ev.daddr, ev.dport)


class VerdictJoin:
    """Pairs eBPF events with NFLOG verdicts of the rule (key: socket uid, daddr, dport), FIFO per
    key, so a burst of identical connects pairs one to one."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.events = _Fifo()
        self.verdicts = _Fifo()

    def add_event(self, ev: EgressConnect, now: float) -> EgressConnect | None:
        key = _join_key(ev)
        nev = self.verdicts.take(key)
        if nev is not None:
            return replace(ev, verdict=nev.verdict)
        self.events.push(key, now, ev)
        return None

    def add_verdict(self, nev: EgressConnect, now: float) -> EgressConnect | None:
        key = _join_key(nev)
        ev = self.events.take(key)
        if ev is not None:
            return replace(ev, verdict=nev.verdict)
        self.verdicts.push(key, now, nev)
        return None

    def expired(self, now: float) -> list[EgressConnect]:
        """Events whose verdict never came (as they are) and verdicts no eBPF event claimed
        (as NFLOG events, so nothing is lost)."""
        return self.events.expired(now, self.wait) + self.verdicts.expired(
            now, max(self.wait * 2, 0.5)
        )


class EgressService:
    """Wires collectors -> attribution -> verdict join -> publisher."""

    def __init__(
        self,
        settings: EgressSettings,
        *,
        socket_path: str | None = None,
        collectors: list[str] | None = None,
        netns: str | None = None,
        on_event: Callable[[EgressConnect], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ports = v.ports(settings.ports)
        self.wanted = collectors or list(settings.collectors)
        self.netns = netns
        self.socket_path = socket_path or settings.socket
        self.on_event = on_event
        mta = []
        for u in settings.allowed_users:
            try:
                mta.append(v.uid_of(u))
            except Exception:
                log.warning("egress: allowed user %r does not exist here", u)
        self.attr = Attributor(
            load_tables(),
            mta,
            fpm_status=settings.fpm_status,
            fpm_status_path=settings.fpm_status_path,
        )
        self.active: list[str] = []
        self.problems: dict[str, str] = {}
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.published = 0
        self.ebpf_stats = (0, 0)  # (emitted, dropped) when the service stopped
        self._rule_netns_ino = self._netns_inode()

    def _netns_inode(self) -> int | None:
        path = f"/run/netns/{self.netns}" if self.netns else "/proc/self/ns/net"
        try:
            return os.stat(path).st_ino
        except OSError:
            return None

    def _rule_installed(self) -> bool:
        """eBPF events wait for an NFLOG verdict only while the egress rule is there."""
        from mailwarden.egress.firewall import rule_installed

        return rule_installed(
            self.settings.firewall_backend, self.settings.firewall_table, netns=self.netns
        )

    def _open_collectors(self) -> tuple[object | None, list[object], object | None]:
        from mailwarden.egress.bpf import BpfCollector, CollectorUnavailable
        from mailwarden.egress.nflog import NflogError, NflogReader
        from mailwarden.egress.sockdiag import SockDiagPoller

        bpf = None
        if "ebpf" in self.wanted:
            try:
                bpf = BpfCollector(self.ports, ring_bytes=self.settings.ring_mb << 20).open()
                self.active.append(f"ebpf:{bpf.mode}")
            except CollectorUnavailable as exc:
                self.problems["ebpf"] = str(exc)
                log.warning("egress: eBPF collector unavailable: %s", exc)
        readers: list[object] = []
        if "nflog" in self.wanted:
            for g in (self.settings.nflog_allow_group, self.settings.nflog_block_group):
                try:
                    readers.append(NflogReader(g, netns=self.netns))
                except (NflogError, OSError) as exc:
                    self.problems[f"nflog:{g}"] = str(exc)
                    log.warning("egress: NFLOG group %d unavailable: %s", g, exc)
            if readers:
                self.active.append("nflog")
        diag = None
        if "sockdiag" in self.wanted and (bpf is None or self.wanted == ["sockdiag"]):
            try:
                diag = SockDiagPoller(self.ports, netns=self.netns)
                self.active.append("sockdiag")
            except OSError as exc:
                self.problems["sockdiag"] = str(exc)
        return bpf, readers, diag

    def reload(self, settings: EgressSettings) -> None:
        """SIGHUP: take new watched ports without reloading anything else."""
        self.settings = settings
        self.ports = v.ports(settings.ports)
        self._pending_ports = True

    def run(self) -> None:
        from mailwarden.egress.bpf import BpfCollector
        from mailwarden.egress.nflog import NflogReader
        from mailwarden.egress.sockdiag import SockDiagPoller

        bpf, readers, diag = self._open_collectors()
        if bpf is None and not readers and diag is None:
            self.ready.set()
            raise RuntimeError(
                "no egress collector can run here: "
                + "; ".join(f"{k}: {e}" for k, e in self.problems.items())
            )
        hello = encode_msg(
            "hello",
            version=VERSION,
            collectors=self.active,
            ports=list(self.ports),
            host=socket.gethostname(),
            problems=self.problems,
        )
        pub = Publisher(self.socket_path, group=self.settings.socket_group, hello=hello)
        join = VerdictJoin(self.settings.verdict_wait)
        sel = selectors.DefaultSelector()
        sel.register(pub.server, selectors.EVENT_READ, "accept")
        if isinstance(bpf, BpfCollector):
            sel.register(bpf.fileno(), selectors.EVENT_READ, "bpf")
        for r in readers:
            assert isinstance(r, NflogReader)
            sel.register(r.fileno(), selectors.EVENT_READ, r)
        self._pending_ports = False
        next_poll = time.monotonic()
        next_stats = time.monotonic() + STATS_EVERY
        rule = bool(readers) and self._rule_installed()
        self.ready.set()
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                timeout = 0.05
                if diag is not None:
                    timeout = max(0.0, min(timeout, next_poll - now))
                out: list[EgressConnect] = []
                for key, _mask in sel.select(timeout):
                    if key.data == "accept":
                        pub.accept()
                    elif key.data == "bpf" and isinstance(bpf, BpfCollector):
                        for raw in bpf.poll(0):
                            ev = self.attr.from_bpf(raw)
                            if rule and ev.netns == self._rule_netns_ino and is_remote(ev.daddr):
                                done = join.add_event(ev, time.monotonic())
                                if done is not None:
                                    out.append(done)
                            else:
                                out.append(ev)
                    elif isinstance(key.data, NflogReader):
                        for rec in key.data.read():
                            nev = self.attr.from_socket(
                                ts=rec.ts,
                                source="nflog",
                                family=rec.family,
                                daddr=rec.daddr,
                                dport=rec.dport or 0,
                                saddr=rec.saddr,
                                sport=rec.sport,
                                uid=rec.uid,
                                gid=rec.gid,
                                verdict=VERDICT_OF_PREFIX.get(rec.prefix, ""),
                                netns=self._rule_netns_ino,
                            )
                            if bpf is None:
                                out.append(nev)
                            else:
                                done = join.add_verdict(nev, time.monotonic())
                                if done is not None:
                                    out.append(done)
                if isinstance(diag, SockDiagPoller) and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.settings.poll_interval
                    for s in diag.poll():
                        out.append(
                            self.attr.from_socket(
                                ts=time.time(),
                                source="sockdiag",
                                family=s.family,
                                daddr=s.daddr,
                                dport=s.dport,
                                saddr=s.saddr,
                                sport=s.sport,
                                uid=s.uid,
                                pid=s.pid,
                                netns=self._rule_netns_ino,
                            )
                        )
                out += join.expired(time.monotonic())
                if out:
                    pub.publish(b"".join(encode(ev) for ev in out))
                    self.published += len(out)
                    if self.on_event:
                        for ev in out:
                            self.on_event(ev)
                pub.flush()
                if self._pending_ports:
                    self._pending_ports = False
                    if isinstance(bpf, BpfCollector):
                        bpf.set_ports(self.ports)
                    if isinstance(diag, SockDiagPoller):
                        diag.set_ports(self.ports)
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + STATS_EVERY
                    rule = bool(readers) and self._rule_installed()
                    emitted, dropped = bpf.stats() if isinstance(bpf, BpfCollector) else (0, 0)
                    if dropped > self.ebpf_stats[1]:
                        log.warning(
                            "egress: %d eBPF events lost (ring buffer full): raise "
                            "[egress] ring_mb",
                            dropped - self.ebpf_stats[1],
                        )
                    self.ebpf_stats = (emitted, dropped)
                    pub.publish(
                        encode_msg(
                            "stats",
                            ts=time.time(),
                            ebpf_emitted=emitted,
                            ebpf_dropped=dropped,
                            nflog_lost=sum(getattr(r, "lost", 0) for r in readers),
                            published=self.published,
                            clients=len(pub.clients),
                        )
                    )
        finally:
            if isinstance(bpf, BpfCollector):
                self.ebpf_stats = bpf.stats()
            for ev in join.expired(float("inf")):
                pub.publish(encode(ev))
            pub.flush()
            sel.close()
            pub.close()
            if isinstance(bpf, BpfCollector):
                bpf.close()
            for r in readers:
                assert isinstance(r, NflogReader)
                r.close()
            if isinstance(diag, SockDiagPoller):
                diag.close()

    def stop(self) -> None:
        self.stop_event.set()


def install_signal_handlers(svc: EgressService, reload: Callable[[], EgressSettings]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: svc.stop())
    signal.signal(signal.SIGINT, lambda *_: svc.stop())
    signal.signal(signal.SIGHUP, lambda *_: svc.reload(reload()))
