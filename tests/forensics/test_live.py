"""trace --live against a real DNS server on loopback (Knot, authoritative for the root)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.dns import DnsServer, reverse_name
from mailwarden.config import DnsSettings, IdentitySettings, Settings
from mailwarden.forensics.run import trace_message
from mailwarden.identity import Identity, detect_identity

T = "Tue, 13 Feb 2018 03:54:09 +0100"


def _me() -> Identity:
    return detect_identity(
        IdentitySettings(ips=["94.130.34.42"], helo_names=["mail.lotsearch.de"]),
        use_postconf=False,
        use_interfaces=False,
    )


@pytest.fixture
def zone(dns_server: DnsServer) -> Iterator[DnsServer]:
    added = [
        ("out.sender-live.test", "A"),
        (reverse_name("203.0.113.10"), "PTR"),
        (reverse_name("203.0.113.11"), "PTR"),
        ("bigmail-live.test", "A"),
        ("mail.lotsearch.de", "A"),
        (reverse_name("94.130.34.42"), "PTR"),
    ]
    dns_server.add_host("out.sender-live.test", "203.0.113.10")  # FCrDNS holds
    dns_server.add(reverse_name("203.0.113.11"), "PTR", "dyn-11.isp-live.test")  # no A back
    dns_server.add("bigmail-live.test", "A", "198.51.100.200")  # a big provider's name
    dns_server.add_host("mail.lotsearch.de", "94.130.34.42")
    dns_server.reload()
    yield dns_server
    for name, rtype in added:
        dns_server.remove(name, rtype)
    dns_server.reload()


def _settings(server: DnsServer) -> Settings:
    return Settings(dns=DnsSettings(nameservers=[server.address], port=server.port, timeout=2))


def _eml(*values: str) -> bytes:
    return "".join(f"Received: {v}\r\n" for v in values).encode() + b"\r\n"


def test_live_checks_ptr_fcrdns_and_helo(zone: DnsServer) -> None:
    eml = _eml(
        f"from out.sender-live.test (out.sender-live.test [203.0.113.10]) by mx.a.test; {T}",
        f"from bigmail-live.test ([203.0.113.11]) by mx.b.test; {T}",
        f"from nothere-live.test ([203.0.113.12]) by mx.c.test; {T}",
        f"from localhost (localhost [127.0.0.1]) by mx.d.test; {T}",
    )
    report, _ = trace_message(eml, _settings(zone), live=True, identity=_me(), use_store=False)
    good, foreign, missing, local = report.hops
    assert good.live["ptr"] == ["out.sender-live.test"] and good.live["fcrdns"] is True
    assert good.live["helo_matches_ip"] is True
    assert {"live-fcrdns", "live-helo-ok"} <= {f.code for f in good.findings}

    assert foreign.live["ptr"] == ["dyn-11.isp-live.test"] and foreign.live["fcrdns"] is False
    assert foreign.live["helo_addresses"] == ["198.51.100.200"]
    codes = {f.code: f for f in foreign.findings}
    assert "live-fcrdns-failed" in codes and "live-helo-elsewhere" in codes
    assert "isp-live.test" in codes["helo-foreign-domain"].text

    assert missing.live["ptr"] == [] and missing.live["fcrdns"] is None
    assert {"live-no-ptr", "live-helo-unresolvable"} <= {f.code for f in missing.findings}
    assert all(r.live.get("errors") == [] for r in (good, foreign, missing))

    assert "not looked up" in local.live["skipped"]


def test_seed_live_shows_our_ip_has_our_ptr_but_helo_is_foreign(zone: DnsServer) -> None:
    eml = _eml(f"from bigmail-live.test ([94.130.34.42]) by smtp-27.iol.local with SMTP; {T}")
    report, _ = trace_message(eml, _settings(zone), live=True, identity=_me(), use_store=False)
    hop = report.hops[0]
    assert hop.live["ptr"] == ["mail.lotsearch.de"] and hop.live["fcrdns"] is True
    assert hop.live["helo_matches_ip"] is False
    assert any(f.code == "helo-foreign-domain" and "lotsearch.de" in f.text for f in hop.findings)
    assert report.verdict.kind == "direct"


def _dead_port() -> int:
    """A loopback UDP port nobody listens on (queries there are refused, never answered)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_dns_failure_is_an_error_never_a_result() -> None:
    settings = Settings(dns=DnsSettings(nameservers=["127.0.0.1"], port=_dead_port(), timeout=0.5))
    eml = _eml(f"from out.sender-live.test (h.example [203.0.113.10]) by mx.a.test; {T}")
    report, _ = trace_message(eml, settings, live=True, identity=_me(), use_store=False)
    hop = report.hops[0]
    errors = [f for f in hop.findings if f.code == "dns-error"]
    assert errors and all(f.severity == "error" for f in errors)
    assert hop.live["errors"]
    # no answer was invented from the failure
    assert hop.live["ptr"] == [] and hop.live["fcrdns"] is None
    assert hop.live["helo_matches_ip"] is None
    assert not {"live-no-ptr", "live-helo-unresolvable", "live-fcrdns-failed"} & {
        f.code for f in hop.findings
    }


def test_cli_live_uses_the_configured_nameserver(zone: DnsServer, etc: Path) -> None:
    (etc / "mailwarden.toml").write_text(
        f'state_dir = "{etc / "state"}"\n'
        f'[dns]\nnameservers = ["{zone.address}"]\nport = {zone.port}\ntimeout = 2\n'
        '[identity]\nips = ["94.130.34.42"]\nhelo_names = ["mail.lotsearch.de"]\n'
    )
    eml = _eml(f"from bigmail-live.test ([94.130.34.42]) by smtp-27.iol.local with SMTP; {T}")
    p = subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", "trace", "--live", "--json", "-"],
        input=eml,
        capture_output=True,
        env={**os.environ, "MAILWARDEN_ETC": str(etc)},
        timeout=60,
    )
    assert p.returncode == 1, p.stderr
    hop = json.loads(p.stdout)["hops"][0]
    assert hop["live"]["ptr"] == ["mail.lotsearch.de"]
    assert hop["live"]["helo_addresses"] == ["198.51.100.200"]
    assert "live-helo-elsewhere" in {f["code"] for f in hop["findings"]}
