"""PTR / FCrDNS / HELO checks against the loopback DNS server."""

from __future__ import annotations

from fixtures.dns import DnsServer
from mailwarden.config import DnsSettings
from mailwarden.reputation.dns import Dns
from mailwarden.reputation.host import check_helo, check_ip, looks_generic


def _dns(srv: DnsServer) -> Dns:
    return Dns.from_settings(DnsSettings(nameservers=[srv.address], timeout=2))


def test_fcrdns_ok_broken_and_missing(dns_server: DnsServer) -> None:
    dns_server.add_host("mail.host-ok.test", "192.0.2.40")  # A + PTR
    dns_server.add("41.2.0.192.in-addr.arpa", "PTR", "mail.host-broken.test")
    dns_server.add("mail.host-broken.test", "A", "192.0.2.99")
    dns_server.reload()
    dns = _dns(dns_server)
    f, names = check_ip(dns, "192.0.2.40")
    assert names == ["mail.host-ok.test"] and [x.severity for x in f] == ["ok"]
    f, names = check_ip(dns, "192.0.2.41")
    assert names == [] and f[0].severity == "problem" and "does not resolve back" in f[0].title
    f, names = check_ip(dns, "192.0.2.42")
    assert f[0].severity == "problem" and "no reverse DNS" in f[0].title


def test_helo_checks(dns_server: DnsServer) -> None:
    dns_server.add_host("mail.helo-ok.test", "192.0.2.50")
    dns_server.add("other.helo-ok.test", "A", "192.0.2.51")
    dns_server.reload()
    dns = _dns(dns_server)
    assert [
        x.severity
        for x in check_helo(dns, "mail.helo-ok.test", ["192.0.2.50"], ["mail.helo-ok.test"])
    ] == ["ok"]
    f = check_helo(dns, "other.helo-ok.test", ["192.0.2.50"], ["mail.helo-ok.test"])
    assert {x.severity for x in f} == {"warning"} and len(f) == 2
    f = check_helo(dns, "nonexistent.helo-ok.test", ["192.0.2.50"], [])
    assert f[0].severity == "problem" and "does not resolve" in f[0].title


def test_generic_ptr_names() -> None:
    assert looks_generic("static.42.34.130.94.clients.your-server.de", "94.130.34.42")
    assert looks_generic("dsl-pool-12.example.net", "192.0.2.1")
    assert looks_generic("94-130-34-42.host.example", "94.130.34.42")
    assert not looks_generic("mail.lotsearch.de", "94.130.34.42")
