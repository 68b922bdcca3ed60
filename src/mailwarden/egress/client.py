"""The unprivileged side of the egress socket: read events, add the destination's provider,
record them (summaries, alerts) or show them live.

Provider: the classify tables decide from the destination's PTR name
(``Classifier.provider_for_host(ptr, ip)``); PTR lookups run in a thread pool and are cached, so
an unseen address delays its own events by at most ``ptr_wait`` and never blocks the others.
Loopback and private addresses are not looked up.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from mailwarden import dnsutil
from mailwarden.config import DnsSettings
from mailwarden.egress.wire import decode, decode_line
from mailwarden.errors import MailwardenError, ValidationError
from mailwarden.events import EgressConnect

log = logging.getLogger("mailwarden.egress")


def read_messages(path: str, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """Connect to the collector's socket and yield each JSON message (``hello``, ``connect``,
    ``stats``...). Malformed lines are logged and skipped. Ends when the server closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as exc:
        s.close()
        raise MailwardenError(
            f"cannot connect to the egress collector at {path}: {exc.strerror}"
            " (is `mailwarden egress run` running, and may this user read its socket?)"
        ) from exc
    s.settimeout(timeout)
    buf = b""
    try:
        while True:
            try:
                chunk = s.recv(1 << 16)
            except TimeoutError:
                yield {"type": "idle"}
                continue
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line:
                    continue
                try:
                    yield decode_line(line)
                except ValidationError as exc:
                    log.warning("%s", exc)
    finally:
        s.close()


def _lookup_ptr(ip: str, settings: DnsSettings | None) -> str:
    import dns.exception
    import dns.reversename

    try:
        ans = dnsutil.resolver(settings).resolve(dns.reversename.from_address(ip), "PTR")
    except (dns.exception.DNSException, ValueError):
        return ""
    return str(ans[0].target).rstrip(".").lower() if len(ans) else ""  # type: ignore[attr-defined]


class ProviderResolver:
    """Destination address -> (provider, PTR), asynchronously, cached."""

    def __init__(
        self,
        provider_for_host: Callable[[str, str], str] | None = None,
        *,
        dns: DnsSettings | None = None,
        workers: int = 4,
    ) -> None:
        self.provider_for_host = provider_for_host or _classifier_provider()
        self.dns = dns
        self.cache: dict[str, tuple[str, str]] = {}
        self.pending: dict[str, Future[str]] = {}
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="egress-ptr")

    @staticmethod
    def wants_lookup(ip: str) -> bool:
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return a.is_global

    def start(self, ip: str) -> None:
        if ip in self.cache or ip in self.pending:
            return
        if not self.wants_lookup(ip):
            self.cache[ip] = ("", "")
            return
        self.pending[ip] = self.pool.submit(_lookup_ptr, ip, self.dns)

    def result(self, ip: str, *, force: bool = False) -> tuple[str, str] | None:
        """(provider, ptr) when known; None while the lookup runs (unless ``force``)."""
        if ip in self.cache:
            return self.cache[ip]
        fut = self.pending.get(ip)
        if fut is None:
            return ("", "")
        if not fut.done() and not force:
            return None
        ptr = fut.result() if fut.done() else ""
        if fut.done():
            del self.pending[ip]
        prov = self.provider_for_host(ptr, ip) if ptr else ""
        res = (prov, ptr)
        if fut.done():
            self.cache[ip] = res
            if len(self.cache) > 100_000:
                self.cache.clear()
        return res

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _classifier_provider() -> Callable[[str, str], str]:
    try:
        from mailwarden.classify.engine import Classifier

        c = Classifier.load()
        return c.provider_for_host
    except (ImportError, MailwardenError) as exc:
        log.warning("egress: provider tables unavailable (%s): providers left empty", exc)
        return lambda host, ip: ""


class Enqueuer:
    """Holds events until their provider is known (or ``ptr_wait`` passed), in arrival order."""

    def __init__(self, resolver: ProviderResolver, ptr_wait: float = 0.5) -> None:
        self.resolver = resolver
        self.ptr_wait = ptr_wait
        self.queue: list[tuple[float, EgressConnect]] = []

    def add(self, ev: EgressConnect) -> None:
        self.resolver.start(ev.daddr)
        self.queue.append((time.monotonic(), ev))

    def ready(self, *, flush: bool = False) -> list[EgressConnect]:
        out: list[EgressConnect] = []
        now = time.monotonic()
        while self.queue:
            t0, ev = self.queue[0]
            res = self.resolver.result(ev.daddr, force=flush or now - t0 >= self.ptr_wait)
            if res is None:
                break
            self.queue.pop(0)
            out.append(replace(ev, provider=res[0], ptr=res[1]) if res != ("", "") else ev)
        return out


def ingest(
    path: str,
    recorder: Any,
    *,
    resolver: ProviderResolver | None = None,
    stop: Callable[[], bool] = lambda: False,
    batch_wait: float = 0.1,
    on_hello: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Read the socket until it closes (or ``stop()``), recording events in batches.
    Returns the number of events recorded."""
    q = Enqueuer(resolver or ProviderResolver())
    n = 0
    last = time.monotonic()
    for msg in read_messages(path, timeout=batch_wait):
        kind = msg.get("type")
        if kind == "connect":
            try:
                q.add(decode(msg))
            except ValidationError as exc:
                log.warning("%s", exc)
        elif kind == "hello" and on_hello:
            on_hello(msg)
        if kind == "idle" or time.monotonic() - last >= batch_wait:
            last = time.monotonic()
            evs = q.ready()
            if evs:
                recorder.record(evs)
                n += len(evs)
        if stop():
            break
    evs = q.ready(flush=True)
    if evs:
        recorder.record(evs)
        n += len(evs)
    return n
