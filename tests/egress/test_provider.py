"""Destination provider: PTR lookups against a real DNS server on loopback (asynchronous,
cached), then the classify provider tables; events wait for their lookup at most ptr_wait."""

from __future__ import annotations

import time

from fixtures.dns import DnsServer
from mailwarden.config import DnsSettings
from mailwarden.egress.client import Enqueuer, ProviderResolver
from mailwarden.events import EgressConnect

# Public addresses: only their PTR names are asked, of the loopback DNS server; no packet goes
# to the addresses themselves.
GOOGLE_IP = "142.250.27.26"
NO_PTR_IP = "198.51.100.77"  # documentation range: not global, never looked up
UNKNOWN_IP = "151.101.1.1"


def ev(daddr: str) -> EgressConnect:
    return EgressConnect(ts=time.time(), source="ebpf", daddr=daddr, dport=25, uid=33)


def test_provider_from_ptr_via_classify_tables(dns_server: DnsServer) -> None:
    dns_server.add_host("mw-egress-test.aspmx.l.google.com", GOOGLE_IP)
    dns_server.reload()
    res = ProviderResolver(dns=DnsSettings(nameservers=[dns_server.address], port=53, timeout=2.0))
    q = Enqueuer(res, ptr_wait=5.0)
    try:
        for ip in (GOOGLE_IP, "10.250.0.2", UNKNOWN_IP, NO_PTR_IP, GOOGLE_IP):
            q.add(ev(ip))
        out = []
        deadline = time.monotonic() + 10
        while len(out) < 5 and time.monotonic() < deadline:
            out += q.ready()
            time.sleep(0.01)
    finally:
        res.close()
    assert [e.daddr for e in out] == [GOOGLE_IP, "10.250.0.2", UNKNOWN_IP, NO_PTR_IP, GOOGLE_IP]
    assert (out[0].provider, out[0].ptr) == ("google", "mw-egress-test.aspmx.l.google.com")
    assert out[4].provider == "google"
    assert all((e.provider, e.ptr) == ("", "") for e in out[1:4])  # NXDOMAIN, private, doc range
    assert set(res.cache) == {GOOGLE_IP, "10.250.0.2", UNKNOWN_IP, NO_PTR_IP}


def test_a_slow_lookup_delays_events_at_most_ptr_wait() -> None:
    # a resolver that never answers (nothing listens on this loopback port)
    dead = DnsSettings(nameservers=["127.0.0.1"], port=9, timeout=3.0)
    res = ProviderResolver(lambda h, i: "x", dns=dead)
    q = Enqueuer(res, ptr_wait=0.2)
    try:
        q.add(ev(UNKNOWN_IP))
        assert q.ready() == []
        t0 = time.monotonic()
        out = []
        while not out and time.monotonic() - t0 < 2:
            out = q.ready()
            time.sleep(0.01)
        waited = time.monotonic() - t0
    finally:
        res.close()
    assert len(out) == 1 and out[0].provider == "" and waited < 1.0
