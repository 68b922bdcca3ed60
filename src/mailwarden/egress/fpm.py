"""PHP-FPM status pages: which script a worker is running right now.

A PHP-FPM worker's environment does not hold the request's SCRIPT_FILENAME; its pool's status
page does (``pm.status_path``, ``?full&json``: one entry per worker with ``pid``, ``state`` and
``script``). This is a minimal FastCGI client (standard library only) that asks a pool's listen
socket (``unix:/run/php/php8.2-fpm.sock`` or ``tcp:127.0.0.1:9000``) for that page.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6
FCGI_RESPONDER = 1
MAX_RESPONSE = 4 << 20


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


def script_of(pid: int, addresses: list[str], path: str = "/status") -> tuple[str, str]:
    """``(script, pool)`` of the request worker ``pid`` is running, from the first status page
    that lists it; ``("", "")`` if none does."""
    for addr in addresses:
        try:
            st = status(addr, path)
        except FpmError:
            continue
        for proc in st.get("processes", []):
            if isinstance(proc, dict) and proc.get("pid") == pid:
                script = proc.get("script", "")
                pool = st.get("pool", "")
                return (
                    script if isinstance(script, str) and script != "-" else "",
                    pool if isinstance(pool, str) else "",
                )
    return "", ""
