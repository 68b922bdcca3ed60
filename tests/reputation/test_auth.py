"""SPF, DMARC and DKIM checks against zones published on the loopback DNS server, with
messages signed in the test by dkimpy."""

from __future__ import annotations

import base64
import re
import subprocess

import dkim
import pytest

from fixtures.dns import DnsServer
from mailwarden.config import DnsSettings
from mailwarden.reputation.auth import (
    dmarc_findings,
    message_findings,
    selector_findings,
    spf_check,
    spf_findings,
)
from mailwarden.reputation.dns import Dns


def _dns(srv: DnsServer) -> Dns:
    return Dns.from_settings(DnsSettings(nameservers=[srv.address], timeout=2))


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """A fresh 2048-bit key: (PEM private key, base64 of the public key for p=)."""
    d = tmp_path_factory.mktemp("dkim")
    subprocess.run(
        ["openssl", "genrsa", "-out", str(d / "k.pem"), "2048"], check=True, capture_output=True
    )
    pub = subprocess.run(
        ["openssl", "rsa", "-in", str(d / "k.pem"), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return (d / "k.pem").read_bytes(), base64.b64encode(pub).decode()


def test_spf_pass_fail_and_missing(dns_server: DnsServer) -> None:
    dns_server.add("spf-good.test", "TXT", "v=spf1 ip4:192.0.2.30 include:_spf.spf-good.test -all")
    dns_server.add("_spf.spf-good.test", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
    dns_server.add("spf-soft.test", "TXT", "v=spf1 a ~all")
    dns_server.add("spf-soft.test", "A", "192.0.2.99")
    dns_server.add("spf-double.test", "TXT", "v=spf1 -all")
    dns_server.add("spf-double.test", "TXT", "v=spf1 +all")
    dns_server.reload()
    dns = _dns(dns_server)
    assert spf_check(dns, "192.0.2.30", "spf-good.test")[0] == "pass"
    assert spf_check(dns, "198.51.100.7", "spf-good.test")[0] == "pass"  # through include:
    assert spf_check(dns, "192.0.2.31", "spf-good.test")[0] == "fail"
    assert spf_check(dns, "192.0.2.31", "spf-soft.test")[0] == "softfail"
    f = spf_findings(dns, ["192.0.2.30"], ["spf-good.test", "spf-none.test", "spf-double.test"])
    sev = {(x.subject, x.severity) for x in f}
    assert ("spf-good.test", "ok") in sev
    assert ("spf-none.test", "problem") in sev
    assert any(x.subject == "spf-double.test" and "2 SPF records" in x.title for x in f)


def test_spf_dns_error_is_an_error() -> None:
    dead = Dns.from_settings(DnsSettings(nameservers=["127.0.53.254"], port=5399, timeout=0.3))
    (f,) = spf_findings(dead, ["192.0.2.30"], ["spf-good.test"])
    assert f.severity == "error"


def test_dmarc_policy_inheritance_and_missing(dns_server: DnsServer) -> None:
    dns_server.add(
        "_dmarc.dmarc-org.test", "TXT", "v=DMARC1; p=reject; rua=mailto:d@dmarc-org.test"
    )
    dns_server.add("_dmarc.dmarc-none.test", "TXT", "v=DMARC1; p=none")
    dns_server.reload()
    f = dmarc_findings(_dns(dns_server), ["news.dmarc-org.test", "dmarc-none.test", "nodmarc.test"])
    by = {x.subject: x for x in f}
    assert by["news.dmarc-org.test"].severity == "ok"
    assert "p=reject" in by["news.dmarc-org.test"].title
    assert "inherited from dmarc-org.test" in by["news.dmarc-org.test"].title
    assert by["dmarc-none.test"].severity == "info"
    assert by["nodmarc.test"].severity == "warning"


def test_dkim_selector_and_message_verification(
    dns_server: DnsServer, rsa_key: tuple[bytes, str]
) -> None:
    priv, pub = rsa_key
    dns_server.add("sel1._domainkey.dkim-ok.test", "TXT", f"v=DKIM1; k=rsa; p={pub}")
    dns_server.add("gone._domainkey.dkim-ok.test", "TXT", "v=DKIM1; k=rsa; p=")
    dns_server.reload()
    dns = _dns(dns_server)
    ok = selector_findings(dns, "sel1", "dkim-ok.test")
    assert ok[0].severity == "ok" and "2048 bits" in ok[0].title
    assert selector_findings(dns, "gone", "dkim-ok.test")[0].severity == "problem"
    assert selector_findings(dns, "missing", "dkim-ok.test")[0].severity == "problem"

    msg = (
        b"From: News <news@dkim-ok.test>\r\nTo: a@example.test\r\nSubject: hello\r\n"
        b"Message-ID: <1@dkim-ok.test>\r\n\r\nHello world.\r\n"
    )
    sig = dkim.sign(
        msg, b"sel1", b"dkim-ok.test", priv, include_headers=[b"from", b"to", b"subject"]
    )
    signed = sig + msg
    f = message_findings(dns, signed)
    assert [x.severity for x in f] == ["ok"], f
    tampered = signed.replace(b"Hello world.", b"Buy pills now.")
    f2 = message_findings(dns, tampered)
    assert f2[0].severity == "problem" and "does not verify" in f2[0].title
    f3 = message_findings(dns, msg)
    assert "no DKIM signature" in f3[0].title


def test_unaligned_signature_is_flagged(dns_server: DnsServer, rsa_key: tuple[bytes, str]) -> None:
    priv, pub = rsa_key
    dns_server.add("s2._domainkey.esp-signer.test", "TXT", f"v=DKIM1; p={pub}")
    dns_server.reload()
    msg = b"From: <a@brand.test>\r\nSubject: x\r\n\r\nbody\r\n"
    signed = dkim.sign(msg, b"s2", b"esp-signer.test", priv, include_headers=[b"from"]) + msg
    f = message_findings(_dns(dns_server), signed)
    assert any(x.severity == "warning" and "aligned" in x.title for x in f)
    assert re.search("not aligned", f[0].title)


def test_bad_key_is_reported(dns_server: DnsServer) -> None:
    dns_server.add("bad._domainkey.dkim-bad.test", "TXT", "v=DKIM1; p=bm90IGEga2V5")
    dns_server.reload()
    (f,) = selector_findings(_dns(dns_server), "bad", "dkim-bad.test")
    assert f.severity == "problem" and "not a valid public key" in f.title
