"""doctor end to end: identity from config, DNS from the loopback server, the real postconf on a
test configuration, JSON output and exit status through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.dns import DnsServer
from mailwarden.config import DnsSettings, IdentitySettings, Settings
from mailwarden.reputation.doctor import DoctorOptions, run_doctor
from mailwarden.reputation.findings import exit_code


def _publish_healthy(srv: DnsServer) -> None:
    srv.add_host("mail.doctor-ok.test", "192.0.2.60")
    srv.add("doctor-ok.test", "TXT", "v=spf1 ip4:192.0.2.60 -all")
    srv.add("_dmarc.doctor-ok.test", "TXT", "v=DMARC1; p=reject")
    srv.reload()


def _settings(srv: DnsServer, **ident: list[str]) -> Settings:
    return Settings(
        dns=DnsSettings(nameservers=[srv.address], timeout=2), identity=IdentitySettings(**ident)
    )


def test_healthy_host_has_no_dns_problem(dns_server: DnsServer) -> None:
    _publish_healthy(dns_server)
    s = _settings(
        dns_server,
        ips=["192.0.2.60"],
        names=["mail.doctor-ok.test"],
        helo_names=["mail.doctor-ok.test"],
        domains=["doctor-ok.test"],
    )
    f = run_doctor(s, DoctorOptions(postfix=False, egress=False))
    bad = [x for x in f if x.severity in ("problem", "warning", "error")]
    assert bad == [], bad
    checks = {x.check for x in f}
    assert {"fcrdns", "helo", "dnsbl", "spf", "dmarc"} <= checks
    assert exit_code(f) == 0


def test_the_seed_host_problems_are_all_named(dns_server: DnsServer) -> None:
    # no PTR, HELO 'mail.com' not ours, listed on XBL, no SPF for the domain
    dns_server.add("70.2.0.192.zen.spamhaus.org", "A", "127.0.0.4")
    dns_server.reload()
    s = _settings(
        dns_server,
        ips=["192.0.2.70"],
        helo_names=["helo.doctor-bad.test"],
        domains=["doctor-bad.test"],
    )
    f = run_doctor(s, DoctorOptions(postfix=False, egress=False))
    titles = "\n".join(f"{x.severity}: {x.title}" for x in f)
    assert "problem: no reverse DNS (PTR) for this sending IP" in titles
    assert "problem: HELO name helo.doctor-bad.test does not resolve" in titles
    assert "XBL" in titles and "publishes no SPF record" in titles
    assert exit_code(f) == 2


@pytest.mark.skipif(shutil.which("postconf") is None, reason="Postfix not installed")
def test_cli_json_and_exit_status(dns_server: DnsServer, tmp_path: Path, etc: Path) -> None:
    _publish_healthy(dns_server)
    pf = tmp_path / "pf"
    pf.mkdir()
    for name in ("main.cf", "master.cf"):
        shutil.copy(Path("/etc/postfix") / name, pf / name)
    subprocess.run(
        [
            "postconf",
            "-c",
            str(pf),
            "-e",
            "mynetworks = 0.0.0.0/0",
            "myhostname = mail.doctor-ok.test",
            "mydomain = doctor-ok.test",
        ],
        check=True,
    )
    for p in pf.iterdir():
        os.utime(p, (time.time() - 60, time.time() - 60))
    (etc / "mailwarden.toml").write_text(
        f'[dns]\nnameservers = ["{dns_server.address}"]\n'
        '[identity]\nips = ["192.0.2.60"]\ndomains = ["doctor-ok.test"]\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", "doctor", "--json", "-c", str(pf)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = json.loads(r.stdout)
    assert r.returncode == 2 == out["exit"]
    relay = [x for x in out["findings"] if x["check"] == "postfix.relay"]
    assert any(
        x["severity"] == "problem" and "every host on the internet" in x["title"] for x in relay
    )
    helo = [x for x in out["findings"] if x["check"] == "helo"]
    assert helo and all(x["severity"] == "ok" for x in helo)  # HELO from postconf myhostname
