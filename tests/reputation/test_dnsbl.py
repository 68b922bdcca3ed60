"""DNSBL checks against a real DNS server on loopback publishing blocklist answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.dns import DnsServer
from mailwarden.config import DnsSettings
from mailwarden.reputation.dns import Dns
from mailwarden.reputation.dnsbl import check, findings, load_zones


def _dns(srv: DnsServer) -> Dns:
    return Dns.from_settings(DnsSettings(nameservers=[srv.address], timeout=2))


def test_shipped_table_is_valid_and_has_no_sorbs() -> None:
    zones = load_zones()
    names = {z.zone for z in zones}
    assert {
        "zen.spamhaus.org",
        "b.barracudacentral.org",
        "bl.spamcop.net",
        "psbl.surriel.com",
        "dnsbl-1.uceprotect.net",
        "bl.mailspike.net",
        "dbl.spamhaus.org",
    } <= names
    assert not any("sorbs" in n for n in names)


def test_listing_codes_errors_and_clean(dns_server: DnsServer) -> None:
    # 192.0.2.10: SBL + XBL on ZEN; 192.0.2.11: Spamhaus refuses the resolver; 192.0.2.12: clean
    dns_server.add("10.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.add("10.2.0.192.zen.spamhaus.org", "A", "127.0.0.4")
    dns_server.add("11.2.0.192.zen.spamhaus.org", "A", "127.255.255.254")
    dns_server.add("10.2.0.192.bl.spamcop.net", "A", "127.0.0.2")
    dns_server.add("10.2.0.192.psbl.surriel.com", "A", "127.0.0.77")
    dns_server.add("example-dbl.test.dbl.spamhaus.org", "A", "127.0.1.102")
    dns_server.reload()
    zones = load_zones()
    got = check(_dns(dns_server), ["192.0.2.10", "192.0.2.11", "192.0.2.12"], zones, "ip")
    by = {(li.zone.id, li.subject): li for li in got}
    zen10 = by[("spamhaus-zen", "192.0.2.10")]
    assert zen10.status == "listed"
    assert sorted(c.list for c in zen10.codes) == ["SBL", "XBL"]
    assert zen10.url == "https://check.spamhaus.org/listed/?searchterm=192.0.2.10"
    zen11 = by[("spamhaus-zen", "192.0.2.11")]
    assert zen11.status == "error" and "public or open resolver" in zen11.error
    assert by[("spamhaus-zen", "192.0.2.12")].status == "clean"
    assert by[("spamcop", "192.0.2.10")].status == "listed"
    assert by[("psbl", "192.0.2.10")].status == "listed" and not by[("psbl", "192.0.2.10")].codes
    f = findings(got)
    assert any(
        x.severity == "problem" and "XBL" in x.title and x.subject == "192.0.2.10" for x in f
    )
    assert any(x.severity == "error" and x.subject == "192.0.2.11" for x in f)
    assert any("undocumented code 127.0.0.77" in x.title for x in f)
    dom = check(_dns(dns_server), ["example-dbl.test", "clean-domain.test"], zones, "domain")
    assert [(li.subject, li.status) for li in dom] == [
        ("example-dbl.test", "listed"),
        ("clean-domain.test", "clean"),
    ]
    assert dom[0].codes[0].list == "DBL abused-legit spam"


def test_dns_failure_is_an_error_not_clean(tmp_path: Path) -> None:
    # nothing listens on this address: a timeout must not read as "not listed"
    dns = Dns.from_settings(DnsSettings(nameservers=["127.0.53.254"], port=5399, timeout=0.3))
    zen = [z for z in load_zones() if z.id == "spamhaus-zen"]
    (li,) = check(dns, ["192.0.2.20"], zen, "ip")
    assert li.status == "error"


def test_ipv6_query_name_is_nibble_reversed() -> None:
    zen = next(z for z in load_zones() if z.id == "spamhaus-zen")
    q = zen.query_name("2001:db8::1")
    assert q.startswith("1.0.0.0.") and q.endswith(".8.b.d.0.1.0.0.2.zen.spamhaus.org")


def test_local_override_disables_a_zone(etc: Path) -> None:
    (etc / "dnsbl.toml").write_text(
        '[[zone]]\nid = "psbl"\nenabled = false\n'
        'zone = "psbl.surriel.com"\nkind = "ip"\nissuer = "psbl"\n'
        'name = "PSBL"\n'
    )
    assert "psbl" not in {z.id for z in load_zones()}


@pytest.mark.parametrize("bad", ["127.0.0.300", "x"])
def test_bad_code_in_table_is_rejected(etc: Path, bad: str) -> None:
    from mailwarden.errors import TableError

    (etc / "dnsbl.toml").write_text(
        '[[zone]]\nid = "x"\nzone = "x.test"\nkind = "ip"\nissuer = "x"\nname = "X"\n'
        f'[[zone.code]]\nanswer = "{bad}"\nlist = "L"\nseverity = "problem"\nmeaning = "m"\n'
    )
    with pytest.raises(TableError, match="dnsbl"):
        load_zones()
