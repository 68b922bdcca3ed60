"""PHP-FPM status pages: which script a worker is running right now.

A PHP-FPM worker's environment does not hold the request's SCRIPT_FILENAME; its pool's status
page does (``pm.status_path``, ``?full&json``: one entry per worker with ``pid``, ``state`` and
``script``). This is a minimal FastCGI client (standard library only) that asks a pool's listen
socket (``unix:/run/php/php8.2-fpm.sock`` or ``tcp:127.0.0.1:9000``) for that page, and
:class:`StatusPages`, which keeps the pages it read briefly (the collector asks per connect).
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6
FCGI_RESPONDER = 1
MAX_RESPONSE = 4 << 20

log = logging.getLogger(__name__)


class FpmError(Exception):
    """The status page could not be read (socket, protocol or content)."""


def _record(rtype: int, content: bytes, req: int = 1) -> bytes:
    return struct.pack("!BBHHBx", 1, rtype, req, len(content), 0) + content


def _pair(name: str, value: str) -> bytes:
    out = b""
    for item in (name.encode(), value.encode()):
        n = len(item)
        out += bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
    return out + name.encode() + value.encode()


def _connect(address: str, timeout: float) -> socket.socket:
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = rest
    elif kind == "tcp" and rest:
        host, _, port = rest.rpartition(":")
        if not port.isdigit():
            raise FpmError(f"bad FPM address {address!r} (tcp:HOST:PORT)")
        s = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
        target = (host.strip("[]"), int(port))
    else:
        raise FpmError(f"bad FPM address {address!r} (unix:/path or tcp:HOST:PORT)")
    s.settimeout(timeout)
    try:
        s.connect(target)
    except OSError as exc:
        s.close()
        raise FpmError(f"{address}: {exc.strerror or exc}") from exc
    return s


def status(address: str, path: str = "/status", *, timeout: float = 1.0) -> dict[str, Any]:
    """The pool's full status (parsed JSON) from its FastCGI socket."""
    params = b"".join(
        _pair(k, v)
        for k, v in (
            ("SCRIPT_NAME", path),
            ("SCRIPT_FILENAME", path),
            ("REQUEST_URI", path + "?full&json"),
            ("QUERY_STRING", "full&json"),
            ("REQUEST_METHOD", "GET"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
        )
    )
    s = _connect(address, timeout)
    try:
        s.sendall(
            _record(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", FCGI_RESPONDER, 0))
            + _record(FCGI_PARAMS, params)
            + _record(FCGI_PARAMS, b"")
            + _record(FCGI_STDIN, b"")
        )
        buf = b""
        out = b""
        while True:
            while len(buf) < 8:
                chunk = s.recv(65536)
                if not chunk:
                    raise FpmError(f"{address}: connection closed mid-response")
                buf += chunk
            _v, rtype, _req, clen, plen = struct.unpack("!BBHHB", buf[:7])
            need = 8 + clen + plen
            while len(buf) < need:
                chunk = s.recv(65536)
                if not chunk:
                    raise FpmError(f"{address}: connection closed mid-record")
                buf += chunk
            content, buf = buf[8 : 8 + clen], buf[need:]
            if rtype == FCGI_STDOUT:
                out += content
                if len(out) > MAX_RESPONSE:
                    raise FpmError(f"{address}: status page too large")
            elif rtype == FCGI_END_REQUEST:
                break
    except OSError as exc:
        raise FpmError(f"{address}: {exc}") from exc
    finally:
        s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    if not body and b"\n\n" in out:
        head, _, body = out.partition(b"\n\n")
    if b"Status: 404" in head or b"File not found" in body[:64]:
        raise FpmError(f"{address}: no status page at {path} (set pm.status_path)")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FpmError(f"{address}: status page is not JSON: {body[:80]!r}") from exc
    if not isinstance(data, dict):
        raise FpmError(f"{address}: unexpected status page")
    return data


@dataclass
class _Page:
    """One parsed status page: ``pid -> (script, running)`` and when it was asked for."""

    taken: float  # CLOCK_BOOTTIME when the request was sent
    pool: str
    workers: dict[int, tuple[str, bool]]

    def answers(self, pid: int, at_boot: float | None, now: float, ttl: float) -> bool:
        """Does this page tell what ``pid`` ran at its connect (``at_boot``, None: unknown)?

        Yes if it was asked for after the connect (a fresh page would say no more), or for a
        worker it shows mid-request if it is younger than ``ttl``. A worker it shows idle or
        does not list may have started a request (or been spawned) since."""
        if at_boot is not None and at_boot <= self.taken:
            return True
        w = self.workers.get(pid)
        return w is not None and w[1] and now - self.taken < ttl


class StatusPages:
    """The pools' status pages (``addresses``), asked as rarely as attribution allows.

    A page is reused for every connect made before it was requested and, for ``ttl`` seconds,
    for the workers it shows running a request; an address that failed is left alone for
    ``backoff`` seconds (a saturated pool answers its status page late, if at all)."""

    def __init__(
        self,
        addresses: list[str],
        path: str = "/status",
        *,
        ttl: float = 0.1,
        backoff: float = 5.0,
        timeout: float = 1.0,
    ) -> None:
        self.addresses = list(addresses)
        self.path = path
        self.ttl = ttl
        self.backoff = backoff
        self.timeout = timeout
        self._pages: dict[str, _Page] = {}
        self._down: dict[str, float] = {}  # address -> CLOCK_BOOTTIME until which it is skipped

    def script_of(self, pid: int, at_boot: float | None = None) -> tuple[str, str]:
        """``(script, pool)`` of the request worker ``pid`` ran at its connect (``at_boot``,
        CLOCK_BOOTTIME seconds), from the first status page that lists it; ``("", "")`` if
        none does."""
        # the pool whose page listed the pid last is asked first
        for addr in sorted(self.addresses, key=lambda a: pid not in self._listed(a)):
            page = self._page(addr, pid, at_boot)
            hit = page.workers.get(pid) if page is not None else None
            if page is not None and hit is not None:
                return hit[0], page.pool
        return "", ""

    def _listed(self, addr: str) -> dict[int, tuple[str, bool]]:
        page = self._pages.get(addr)
        return page.workers if page is not None else {}

    def _page(self, addr: str, pid: int, at_boot: float | None) -> _Page | None:
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
        page = self._pages.get(addr)
        if page is not None and page.answers(pid, at_boot, now, self.ttl):
            return page
        if self._down.get(addr, 0.0) > now:
            return None
        try:
            st = status(addr, self.path, timeout=self.timeout)
        except FpmError as exc:
            log.debug("PHP-FPM status page: %s (not asked again for %gs)", exc, self.backoff)
            self._down[addr] = time.clock_gettime(time.CLOCK_BOOTTIME) + self.backoff
            return None
        workers: dict[int, tuple[str, bool]] = {}
        for proc in st.get("processes", []):
            if isinstance(proc, dict) and isinstance(proc.get("pid"), int):
                script = proc.get("script", "")
                script = script if isinstance(script, str) and script != "-" else ""
                # running a script (the worker serving this very page shows "Running" and "-")
                workers[proc["pid"]] = (script, proc.get("state") == "Running" and bool(script))
        pool = st.get("pool", "")
        page = _Page(now, pool if isinstance(pool, str) else "", workers)
        self._pages[addr] = page
        return page
