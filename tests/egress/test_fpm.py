"""A real PHP-FPM pool (Debian php-fpm) in the senders' namespace: a request whose script
connects to the receiver's port 25 is attributed to that script through the pool's status page,
and to its pool by the worker's title."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwarden.egress.attribute import Attributor
from mailwarden.egress.bpf import BpfCollector
from mailwarden.egress.enrich import load_tables
from mailwarden.egress.fpm import FpmError, StatusPages, _pair, _record, status

from .conftest import EgressNet, why_no_bpf
from .test_bpf import drain

FPM = sorted(glob.glob("/usr/sbin/php-fpm*"))
WHY = why_no_bpf() or ("" if FPM else "php-fpm not installed")
pytestmark = [pytest.mark.root, pytest.mark.skipif(bool(WHY), reason=WHY or "ok")]

SEND_PHP = """<?php
$s = @fsockopen($_GET['h'], (int)$_GET['p'], $errno, $errstr, 5);
if ($s) { fgets($s); fwrite($s, "EHLO fpm.example\\r\\n"); usleep(400000);
          fwrite($s, "QUIT\\r\\n"); fclose($s); echo "ok"; }
else { echo "refused"; }
"""


def fcgi_request(sock: str, script: str, query: str) -> bytes:
    params = b"".join(
        _pair(k, v)
        for k, v in (
            ("SCRIPT_FILENAME", script),
            ("SCRIPT_NAME", "/" + os.path.basename(script)),
            ("QUERY_STRING", query),
            ("REQUEST_METHOD", "GET"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
        )
    )
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock)
    s.sendall(
        _record(1, struct.pack("!HB5x", 1, 0))
        + _record(4, params)
        + _record(4, b"")
        + _record(5, b"")
    )
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out


@pytest.fixture(scope="module")
def fpm_pool(egress_net: EgressNet) -> Iterator[tuple[Path, str]]:
    d = Path(tempfile.mkdtemp(prefix="mw-fpm-", dir="/tmp"))
    d.chmod(0o755)
    (d / "www").mkdir(mode=0o755)
    (d / "www" / "send.php").write_text(SEND_PHP)
    (d / "www" / "send.php").chmod(0o644)
    sock = str(d / "fpm.sock")
    (d / "fpm.conf").write_text(f"""[global]
pid = {d}/fpm.pid
error_log = {d}/fpm.log
daemonize = no

[mwtest]
user = www-data
group = www-data
listen = {sock}
listen.owner = root
listen.mode = 0600
pm = static
pm.max_children = 2
pm.status_path = /status
""")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", egress_net.a, FPM[0], "-F", "-y", str(d / "fpm.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (d / "fpm.log").read_text() if (d / "fpm.log").exists() else ""
                raise RuntimeError(f"php-fpm did not start: {log}")
            time.sleep(0.05)
        yield d, sock
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(d, ignore_errors=True)


def test_status_page_lists_the_workers(fpm_pool: tuple[Path, str]) -> None:
    _d, sock = fpm_pool
    st = status(f"unix:{sock}")
    assert st["pool"] == "mwtest"
    assert len(st["processes"]) == 2
    with pytest.raises(FpmError, match="no status page"):
        status(f"unix:{sock}", "/nope")
    with pytest.raises(FpmError):
        status("unix:/nonexistent/fpm.sock")
    with pytest.raises(FpmError, match="bad FPM address"):
        status("ftp:x")


@pytest.mark.parametrize("with_status", [True, False])
def test_fpm_request_is_attributed_to_its_script_and_pool(
    egress_net: EgressNet, fpm_pool: tuple[Path, str], with_status: bool
) -> None:
    d, sock = fpm_pool
    net = egress_net
    uid = pwd.getpwnam("www-data").pw_uid
    attr = Attributor(load_tables(), [], fpm_status=[f"unix:{sock}"] if with_status else [])
    script = str(d / "www" / "send.php")
    with BpfCollector([25]) as c:
        box: dict[str, bytes] = {}
        t = threading.Thread(
            target=lambda: box.update(out=fcgi_request(sock, script, f"h={net.b4}&p=25"))
        )
        t.start()
        # read the event while the request runs (as the collector does, within milliseconds)
        evs = drain(c, attr, lambda e: e.uid == uid and e.netns == net.netns_inode(), 1, 5)
        t.join(10)
    assert b"ok" in box["out"]
    assert len(evs) == 1
    e = evs[0]
    assert e.pool == "mwtest" and e.cmdline[0].startswith("php-fpm: pool mwtest")
    assert e.script == (script if with_status else "")
    assert e.exe.startswith("/usr/sbin/php-fpm")


def test_status_pages_are_reused_but_a_request_started_since_is_still_seen(
    egress_net: EgressNet, fpm_pool: tuple[Path, str]
) -> None:
    d, sock = fpm_pool
    addr = f"unix:{sock}"
    script = str(d / "www" / "send.php")

    def asked() -> int:  # requests the pool accepted (this one included)
        return int(status(addr)["accepted conn"])

    def boottime() -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    pids = [p["pid"] for p in status(addr)["processes"]]
    pages = StatusPages([addr], ttl=5.0)  # long: only what a page shows decides below
    before = asked()
    connect = boottime()
    # connects made before the page was asked for: one page answers them all
    assert pages.script_of(pids[0], connect)[1] == "mwtest"
    assert pages.script_of(pids[1], connect)[1] == "mwtest"
    assert pages.script_of(99999999, connect) == ("", "")
    assert asked() == before + 2  # the page once, and asked() itself

    # a worker idle on that page (or serving the page itself: "Running" with no script)
    # starts a request and connects right away: the page is asked for again
    box: dict[str, bytes] = {}
    t = threading.Thread(
        target=lambda: box.update(out=fcgi_request(sock, script, f"h={egress_net.b4}&p=25"))
    )
    t.start()
    try:
        deadline = time.monotonic() + 5
        running: list[int] = []
        while not running and time.monotonic() < deadline:
            running = [
                p["pid"]
                for p in status(addr)["processes"]
                if p["state"] == "Running" and p["script"] == script
            ]
        assert running
        before = asked()
        assert pages.script_of(running[0], boottime()) == (script, "mwtest")
        # while the page is fresh, it answers for the worker it shows mid-request
        assert pages.script_of(running[0], boottime()) == (script, "mwtest")
        assert asked() == before + 2
    finally:
        t.join(10)
    assert b"ok" in box["out"]
