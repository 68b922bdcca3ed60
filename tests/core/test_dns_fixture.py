"""The loopback DNS server fixture serves what a test publishes, and nothing else."""

from __future__ import annotations

import dns.resolver
import pytest

from fixtures.dns import DnsServer


def test_serves_published_records_and_nxdomain_for_the_rest(dns_server: DnsServer) -> None:
    dns_server.add_mx("dnsfixture.example", "mx1.dnsfixture.example", ip="127.0.31.7")
    dns_server.add("2.0.0.127.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.add("sel._domainkey.dnsfixture.example", "TXT", "v=DKIM1; p=" + "A" * 400)
    dns_server.reload()
    r = dns_server.resolver()
    mx = r.resolve("dnsfixture.example", "MX")
    assert [str(x.exchange) for x in mx] == ["mx1.dnsfixture.example."]
    assert [x.address for x in r.resolve("mx1.dnsfixture.example", "A")] == ["127.0.31.7"]
    assert str(r.resolve_address("127.0.31.7")[0]) == "mx1.dnsfixture.example."
    assert [x.address for x in r.resolve("2.0.0.127.zen.spamhaus.org", "A")] == ["127.0.0.2"]
    txt = b"".join(r.resolve("sel._domainkey.dnsfixture.example", "TXT")[0].strings)
    assert txt == b"v=DKIM1; p=" + b"A" * 400
    with pytest.raises(dns.resolver.NXDOMAIN):
        r.resolve("not-published.dnsfixture.example", "A")


def test_reload_replaces_answers(dns_server: DnsServer) -> None:
    dns_server.add("flip.dnsfixture.example", "A", "127.0.31.8")
    dns_server.reload()
    assert dns_server.resolver().resolve("flip.dnsfixture.example", "A")[0].address == "127.0.31.8"
    dns_server.remove("flip.dnsfixture.example", "A")
    dns_server.add("flip.dnsfixture.example", "A", "127.0.31.9")
    dns_server.reload()
    assert dns_server.resolver().resolve("flip.dnsfixture.example", "A")[0].address == "127.0.31.9"


def test_rejects_names_that_would_corrupt_the_zone() -> None:
    srv = DnsServer("127.0.53.250")
    with pytest.raises(ValueError):
        srv.add("bad name.example", "A", "127.0.0.1")
    with pytest.raises(ValueError):
        srv.add("x.example", "A", "not-an-ip")
    srv.stop()
