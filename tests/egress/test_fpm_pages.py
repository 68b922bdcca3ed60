"""PHP-FPM status pages are reused and a failing pool is left alone for a while: a small real
FastCGI status server on a unix socket, whose page the test writes, counts what it is asked."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwarden.egress.fpm import FCGI_END_REQUEST, FCGI_STDIN, FCGI_STDOUT, StatusPages, _record


class StatusServer:
    """Answers every FastCGI request with ``page`` (JSON); closes at once if ``broken``."""

    def __init__(self, path: Path) -> None:
        self.address = f"unix:{path}"
        self.page: dict[str, Any] = {"pool": "www", "processes": []}
        self.broken = False
        self.accepted = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def workers(self, *procs: tuple[int, str, str]) -> None:
        self.page["processes"] = [{"pid": p, "state": st, "script": sc} for p, st, sc in procs]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                self.accepted += 1
                if not self.broken:
                    self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        while True:  # read records up to the empty FCGI_STDIN that ends the request
            while len(buf) < 8 or len(buf) < 8 + sum(struct.unpack("!HB", buf[4:7])):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            rtype = buf[1]
            clen, plen = struct.unpack("!HB", buf[4:7])
            buf = buf[8 + clen + plen :]
            if rtype == FCGI_STDIN and clen == 0:
                break
        body = b"Content-type: application/json\r\n\r\n" + json.dumps(self.page).encode()
        conn.sendall(
            _record(FCGI_STDOUT, body)
            + _record(FCGI_STDOUT, b"")
            + _record(FCGI_END_REQUEST, bytes(8))
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[StatusServer, StatusServer]]:
    a, b = StatusServer(tmp_path / "a.sock"), StatusServer(tmp_path / "b.sock")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def test_a_page_answers_earlier_connects_and_running_workers_for_a_short_time(
    servers: tuple[StatusServer, StatusServer],
) -> None:
    srv, _ = servers
    srv.workers((10, "Running", "/a.php"), (11, "Idle", "/old.php"), (12, "Running", "-"))
    pages = StatusPages([srv.address], ttl=0.3)
    connect = boottime()
    assert pages.script_of(10, connect) == ("/a.php", "www")
    # a connect before the page was asked for: the page answers, even for an idle worker
    # (its request ended since) and for a pid it does not list
    assert pages.script_of(11, connect) == ("/old.php", "www")
    assert pages.script_of(99, connect) == ("", "")
    assert srv.accepted == 1
    # a later connect by a worker the fresh page shows running a script: still that script
    assert pages.script_of(10, boottime()) == ("/a.php", "www")
    assert pages.script_of(10, None) == ("/a.php", "www")
    assert srv.accepted == 1
    # ... but a worker it showed idle (or serving the status page) may have started a request
    srv.workers((10, "Running", "/a.php"), (11, "Running", "/new.php"), (12, "Running", "/n.php"))
    assert pages.script_of(11, boottime()) == ("/new.php", "www")
    assert srv.accepted == 2
    assert pages.script_of(12, boottime()) == ("/n.php", "www")
    assert srv.accepted == 2  # the page just asked for shows it running
    # a pid the page does not list may be a worker spawned since
    assert pages.script_of(13, boottime()) == ("", "")
    assert srv.accepted == 3
    # once the page is older than the ttl, a running worker is asked about again
    time.sleep(0.35)
    srv.workers((10, "Running", "/b.php"))
    assert pages.script_of(10, boottime()) == ("/b.php", "www")
    assert srv.accepted == 4


def test_a_failing_address_is_left_alone_for_the_backoff(
    servers: tuple[StatusServer, StatusServer],
) -> None:
    bad, good = servers
    bad.broken = True
    for s in servers:
        s.workers((10, "Running", "/a.php"))
    good.page["pool"] = "shop"
    pages = StatusPages([bad.address, good.address], ttl=0.0, backoff=0.5)
    assert pages.script_of(10, boottime()) == ("/a.php", "shop")
    assert (bad.accepted, good.accepted) == (1, 1)
    # within the back-off only the good address is asked (ttl 0: every call asks)
    bad.broken = False
    bad.page["pool"] = "www"
    assert pages.script_of(10, boottime()) == ("/a.php", "shop")
    assert pages.script_of(77, boottime()) == ("", "")
    assert (bad.accepted, good.accepted) == (1, 3)
    time.sleep(0.55)
    assert pages.script_of(77, boottime()) == ("", "")
    assert (bad.accepted, good.accepted) == (2, 4)


def test_the_pool_that_listed_the_pid_is_asked_first(
    servers: tuple[StatusServer, StatusServer],
) -> None:
    www, shop = servers
    www.workers((20, "Running", "/x.php"))
    shop.page["pool"] = "shop"
    shop.workers((10, "Running", "/a.php"))
    pages = StatusPages([www.address, shop.address], ttl=5.0)
    assert pages.script_of(10, boottime()) == ("/a.php", "shop")
    assert (www.accepted, shop.accepted) == (1, 1)
    # www's page does not list 10 (it could be a new worker there), shop's shows it running
    assert pages.script_of(10, boottime()) == ("/a.php", "shop")
    assert (www.accepted, shop.accepted) == (1, 1)
