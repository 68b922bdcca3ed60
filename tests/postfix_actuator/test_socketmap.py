"""The socketmap server over real TCP sockets, with real MX lookups against the loopback DNS
server, and with Postfix's own socketmap client (postmap -q)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from typing import Any

import pytest

from mailwarden.postfix.socketmap import ns

from .conftest import RunningMap

SWISS = {"state": "open", "code": "4.7.1", "reason": "circuit open for provider swisscom"}


def _setup_dns(dns_server: Any) -> None:
    if getattr(dns_server, "_smtest_ready", False):
        return
    dns_server.add_mx("bluewin-smtest.ch", "mx01.smtest-swisscom.ch", ip="127.0.99.2")
    dns_server.add_mx("bluewin-smtest.ch", "mx02.smtest-swisscom.ch", pref=20, ip="127.0.99.3")
    dns_server.add_mx("swissonline-smtest.ch", "mx01.smtest-swisscom.ch")
    dns_server.add_mx("gmail-smtest.com", "aspmx.l.smtest-google.com", ip="127.0.99.4")
    # primary at an accepting provider, backup at the blocked one: not parked
    dns_server.add_mx("vanity-smtest.org", "aspmx.l.smtest-google.com")
    dns_server.add_mx("vanity-smtest.org", "mx02.smtest-swisscom.ch", pref=50)
    dns_server.add_host("noMX-smtest.ch", "127.0.99.5")
    dns_server.add("nullmx-smtest.ch", "MX", "0 .")
    dns_server.reload()
    dns_server._smtest_ready = True


TABLE = {
    "smtest-swisscom.ch": "swisscom",
    "smtest-google.com": "google",
    "nomx-smtest.ch": "selfhosted",
}


class Client:
    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, raw: bytes) -> None:
        self.s.sendall(raw)

    def query(self, key: str, name: str = "transport") -> str:
        self.send(ns(f"{name} {key}"))
        return self.read()

    def read(self) -> str:
        while b":" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b":")
        n = int(head)
        while len(rest) < n + 1:
            chunk = self.s.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
        assert rest[n : n + 1] == b","
        self.buf = rest[n + 1 :]
        return rest[:n].decode()

    def closed_by_server(self, wait: float = 3.0) -> bool:
        self.s.settimeout(wait)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.s.close()


@pytest.fixture
def swiss_open(socketmap: Any, dns_server: Any) -> RunningMap:
    _setup_dns(dns_server)
    m = socketmap(TABLE)
    m.publish({"swisscom": SWISS})
    return m


def test_parks_every_domain_of_an_open_provider_and_nothing_else(swiss_open: RunningMap) -> None:
    c = Client(swiss_open.port)
    parked = "OK retry:4.7.1 circuit open for provider swisscom"
    assert c.query("alice@bluewin-smtest.ch") == parked
    assert c.query("Bob@BLUEWIN-SMTEST.CH") == parked
    assert c.query("carol@swissonline-smtest.ch") == parked  # same provider, other domain
    assert c.query("dave@gmail-smtest.com") == "NOTFOUND "
    assert c.query("erin@vanity-smtest.org") == "NOTFOUND "  # primary MX elsewhere
    assert c.query("frank@nomx-smtest.ch") == "NOTFOUND "  # implicit MX, provider not open
    assert c.query("gina@nullmx-smtest.ch") == "NOTFOUND "
    assert c.query("nobody@nxdomain-smtest.invalid") == "NOTFOUND "
    assert c.query("*") == "NOTFOUND "
    assert c.query("alice@bluewin-smtest.ch", name="virtual") == "NOTFOUND "
    c.close()


def test_implicit_mx_domain_is_attributed_by_its_own_name(swiss_open: RunningMap) -> None:
    swiss_open.publish({"selfhosted": {**SWISS, "reason": "circuit open for provider x"}})
    c = Client(swiss_open.port)
    assert c.query("frank@nomx-smtest.ch") == "OK retry:4.7.1 circuit open for provider x"
    assert c.query("alice@bluewin-smtest.ch") == "NOTFOUND "


def test_closing_takes_effect_without_reconnecting(swiss_open: RunningMap) -> None:
    c = Client(swiss_open.port)
    assert c.query("a@bluewin-smtest.ch").startswith("OK retry:")
    swiss_open.publish({})
    assert c.query("a@bluewin-smtest.ch") == "NOTFOUND "
    swiss_open.publish({"swisscom": SWISS})
    assert c.query("a@bluewin-smtest.ch").startswith("OK retry:")


def test_probing_lets_a_few_recipients_through_per_round(swiss_open: RunningMap) -> None:
    probing = {**SWISS, "state": "probing", "probe_round": 1, "probe_recipients": 2}
    swiss_open.publish({"swisscom": probing})
    c = Client(swiss_open.port)
    answers = [c.query(f"u{i}@bluewin-smtest.ch") for i in range(5)]
    assert answers[:2] == ["NOTFOUND ", "NOTFOUND "]
    assert all(a.startswith("OK retry:") for a in answers[2:])
    swiss_open.publish({"swisscom": {**probing, "probe_round": 2}})
    assert c.query("u9@bluewin-smtest.ch") == "NOTFOUND "
    assert swiss_open.stats.probes == 3


def test_slowed_provider_goes_through_its_clone(swiss_open: RunningMap) -> None:
    swiss_open.publish({"swisscom": {"state": "slowed", "transport": "mwslow10s1"}})
    c = Client(swiss_open.port)
    assert c.query("a@bluewin-smtest.ch") == "OK mwslow10s1:"
    assert c.query("a@gmail-smtest.com") == "NOTFOUND "


def test_never_park_addresses_and_domains(swiss_open: RunningMap) -> None:
    swiss_open.publish(
        {"swisscom": SWISS}, ["postmaster@bluewin-smtest.ch", "swissonline-smtest.ch"]
    )
    c = Client(swiss_open.port)
    assert c.query("postmaster@bluewin-smtest.ch") == "NOTFOUND "
    assert c.query("other@bluewin-smtest.ch").startswith("OK retry:")
    assert c.query("x@swissonline-smtest.ch") == "NOTFOUND "


@pytest.mark.parametrize(
    "key",
    [
        "no-at-sign",
        "a b@bluewin-smtest.ch",
        "a@bluewin-smtest.ch\nx",
        "@bluewin-smtest.ch",
        "a@[127.0.0.1]",
        "a@-bad-.ch",
        "a@" + "x" * 300 + ".ch",
        '"quoted local"@bluewin-smtest.ch',
        "a@bluewin-smtest.ch\x00",
    ],
)
def test_malformed_keys_fail_open(swiss_open: RunningMap, key: str) -> None:
    c = Client(swiss_open.port)
    assert c.query(key) == "NOTFOUND "
    assert c.query("ok@bluewin-smtest.ch").startswith("OK retry:")  # connection still fine


@pytest.mark.parametrize(
    "raw",
    [b"abc:xyz,", b"5:hello;", b"99999999:", b"12345678", b"-1:x,", b"5000:" + b"a" * 10],
)
def test_malformed_or_oversized_netstrings_drop_only_that_client(
    swiss_open: RunningMap, raw: bytes
) -> None:
    good = Client(swiss_open.port)
    bad = Client(swiss_open.port)
    bad.send(raw)
    assert bad.closed_by_server()
    assert good.query("a@bluewin-smtest.ch").startswith("OK retry:")
    assert swiss_open.stats.malformed >= 1


def test_non_utf8_request_is_notfound(swiss_open: RunningMap) -> None:
    c = Client(swiss_open.port)
    body = b"transport \xff\xfe@x.ch"
    c.send(b"%d:%s," % (len(body), body))
    assert c.read() == "NOTFOUND "


def test_pipelined_requests_in_one_packet_are_answered_in_order(swiss_open: RunningMap) -> None:
    c = Client(swiss_open.port)
    keys = ["a@bluewin-smtest.ch", "b@gmail-smtest.com", "c@new-smtest-1.ch", "d@bluewin-smtest.ch"]
    c.send(b"".join(ns(f"transport {k}") for k in keys))
    got = [c.read() for _ in keys]
    assert got[0].startswith("OK retry:") and got[1] == "NOTFOUND "
    assert got[2] == "NOTFOUND " and got[3].startswith("OK retry:")


def test_stuck_half_request_is_dropped_and_others_unaffected(
    socketmap: Any, dns_server: Any
) -> None:
    _setup_dns(dns_server)
    m = socketmap(TABLE, request_timeout=0.5)
    m.publish({"swisscom": SWISS})
    stuck = Client(m.port)
    stuck.send(b"30:transport a@blue")  # never completed
    good = Client(m.port)
    for _ in range(20):
        assert good.query("a@bluewin-smtest.ch").startswith("OK retry:")
    assert stuck.closed_by_server(wait=3.0)


def test_connection_flood_is_capped(socketmap: Any, dns_server: Any) -> None:
    _setup_dns(dns_server)
    m = socketmap(TABLE, max_connections=5)
    m.publish({"swisscom": SWISS})
    held = [Client(m.port) for _ in range(5)]
    assert held[0].query("a@bluewin-smtest.ch").startswith("OK retry:")
    extra = Client(m.port)
    assert extra.closed_by_server()
    held[1].close()
    time.sleep(0.1)
    again = Client(m.port)
    assert again.query("a@bluewin-smtest.ch").startswith("OK retry:")


def test_dns_timeout_fails_open_fast_and_does_not_block_others(socketmap: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A "DNS server" that never answers: a bound UDP socket nobody reads.
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    try:
        m = socketmap(
            TABLE, nameservers=["127.0.0.1"], dns_port=hole.getsockname()[1], lookup_timeout=0.3
        )
        m.publish({"swisscom": SWISS})
        slow = Client(m.port)
        fast = Client(m.port)
        results: dict[str, Any] = {}

        def ask() -> None:
            t0 = time.monotonic()
            results["answer"] = slow.query("a@timeout-smtest.ch")
            results["took"] = time.monotonic() - t0

        th = threading.Thread(target=ask)
        th.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        assert fast.query("b@timeout2-smtest.ch") == "NOTFOUND "  # its own timeout, in parallel
        assert fast.query("nope") == "NOTFOUND "
        assert time.monotonic() - t0 < 1.0
        th.join(5)
        assert results["answer"] == "NOTFOUND " and results["took"] < 1.0
        assert m.stats.timeouts >= 2
    finally:
        hole.close()


def test_provider_lookup_crash_fails_open(socketmap: Any, dns_server: Any) -> None:
    _setup_dns(dns_server)

    def boom(host: str) -> str:
        raise RuntimeError("classifier bug")

    m = socketmap({})
    assert m.server is not None
    m.server.policy.provider_for_host = boom
    m.publish({"swisscom": SWISS})
    c = Client(m.port)
    assert c.query("a@bluewin-smtest.ch") == "NOTFOUND "


def test_corrupt_view_keeps_the_last_good_one(swiss_open: RunningMap) -> None:
    c = Client(swiss_open.port)
    assert c.query("a@bluewin-smtest.ch").startswith("OK retry:")
    swiss_open.view.write_text(
        '{"version": 1, "providers": {"swisscom": {"state": "open", "reason": "bad\\nreason"}}}'
    )
    time.sleep(0.3)
    assert c.query("a@bluewin-smtest.ch").startswith("OK retry:4.7.1 circuit open")
    assert swiss_open.server is not None and swiss_open.server.policy.watcher.errors >= 1
    swiss_open.view.unlink()  # the engine withdrew the view: enforce nothing
    time.sleep(0.3)
    assert c.query("a@bluewin-smtest.ch") == "NOTFOUND "


def test_refuses_to_publish_an_unsafe_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mailwarden.errors import ValidationError
    from mailwarden.postfix.socketmap import write_view

    with pytest.raises(ValidationError):
        write_view(tmp_path / "v.json", {"x": {"state": "open", "reason": "a\nb"}})
    with pytest.raises(ValidationError):
        write_view(tmp_path / "v.json", {"x": {"state": "slowed", "transport": "smtp -o x"}})
    assert not (tmp_path / "v.json").exists()


@pytest.mark.skipif(shutil.which("postmap") is None, reason="postfix not installed")
def test_postfix_own_socketmap_client_gets_our_answers(swiss_open: RunningMap) -> None:
    table = f"socketmap:inet:127.0.0.1:{swiss_open.port}:transport"
    p = subprocess.run(
        ["postmap", "-q", "alice@bluewin-smtest.ch", table],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "retry:4.7.1 circuit open for provider swisscom"
    p = subprocess.run(
        ["postmap", "-q", "dave@gmail-smtest.com", table],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == 1 and p.stdout == ""  # not found


def test_random_garbage_never_hurts_the_server(swiss_open: RunningMap) -> None:
    """Fuzz: arbitrary bytes on one connection; the server keeps answering everyone else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = Client(swiss_open.port)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=1, max_size=300))
    def fuzz(blob: bytes) -> None:
        bad = socket.create_connection(("127.0.0.1", swiss_open.port), timeout=2)
        try:
            bad.sendall(blob)
        except OSError:
            pass
        finally:
            bad.close()
        assert good.query("a@bluewin-smtest.ch").startswith("OK retry:")

    fuzz()
    assert swiss_open.stats.errors == 0
