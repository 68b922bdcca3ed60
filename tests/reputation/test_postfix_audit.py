"""The Postfix audit, run by the real `postconf` of the Debian package on configurations the
test writes (a copy of the packaged main.cf/master.cf, changed with `postconf -e`/`-M`/`-P`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mailwarden.reputation.postfix_audit import (
    audit,
    check_bulk_split,
    check_log_retention,
    check_queue_lifetime,
    check_relay,
    check_tls,
    load_config,
    logrotate_retention,
    parse_duration,
)

pytestmark = pytest.mark.skipif(shutil.which("postconf") is None, reason="Postfix not installed")


@pytest.fixture
def pfdir(tmp_path: Path) -> Path:
    d = tmp_path / "postfix"
    d.mkdir()
    for f in ("main.cf", "master.cf"):
        src = Path("/etc/postfix") / f
        if not src.exists():
            src = Path("/usr/share/postfix") / f"{f}.dist"
        shutil.copy(src, d / f)
    _age(d)
    return d


def _age(d: Path) -> None:
    # Postfix re-reads a configuration file younger than a second after short sleeps; real
    # configurations are old, so age the test's files instead of waiting.
    for f in d.iterdir():
        os.utime(f, (time.time() - 60, time.time() - 60))


def postconf(d: Path, *args: str) -> None:
    subprocess.run(["postconf", "-c", str(d), *args], check=True, capture_output=True)
    _age(d)


def test_open_relay_by_mynetworks_and_by_restrictions(pfdir: Path) -> None:
    postconf(
        pfdir,
        "-e",
        "mynetworks = 127.0.0.0/8 [::1]/128",
        "smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination",
    )
    assert [f.severity for f in check_relay(load_config(str(pfdir)))] == ["ok"]

    postconf(pfdir, "-e", "mynetworks = 127.0.0.0/8 0.0.0.0/0")
    f = check_relay(load_config(str(pfdir)))
    assert any(x.severity == "problem" and "every host on the internet" in x.title for x in f)

    postconf(pfdir, "-e", "mynetworks = 127.0.0.0/8 198.51.0.0/16")
    f = check_relay(load_config(str(pfdir)))
    assert any(x.severity == "warning" and "wide public networks" in x.title for x in f)

    postconf(
        pfdir,
        "-e",
        "mynetworks = 127.0.0.0/8",
        "smtpd_relay_restrictions = permit",
        "smtpd_recipient_restrictions = permit_mynetworks reject_unauth_destination",
    )
    f = check_relay(load_config(str(pfdir)))
    assert any(x.severity == "problem" and "relay for anybody" in x.title for x in f)

    postconf(
        pfdir,
        "-e",
        "smtpd_relay_restrictions =",
        "smtpd_recipient_restrictions = permit_mynetworks permit",
    )
    f = check_relay(load_config(str(pfdir)))
    assert any(x.severity == "problem" for x in f)


def test_tls_levels_and_certificate_expiry(pfdir: Path, tmp_path: Path) -> None:
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "3",
            "-subj",
            "/CN=mail.example.test",
        ],
        check=True,
        capture_output=True,
    )
    postconf(
        pfdir,
        "-e",
        "smtp_tls_security_level = none",
        f"smtpd_tls_cert_file = {crt}",
        f"smtpd_tls_key_file = {key}",
        "smtpd_tls_security_level = may",
    )
    f = check_tls(load_config(str(pfdir)))
    assert any(x.severity == "warning" and "never encrypted" in x.title for x in f)
    assert any(x.severity == "warning" and "expires on" in x.title for x in f)
    postconf(pfdir, "-e", "smtp_tls_security_level = may", "smtpd_tls_security_level = none")
    f = check_tls(load_config(str(pfdir)))
    assert any("offers no STARTTLS" in x.title for x in f)
    assert any(x.severity == "ok" and "outgoing TLS" in x.title for x in f)


def test_queue_lifetime(pfdir: Path) -> None:
    postconf(pfdir, "-e", "maximal_queue_lifetime = 1d")
    (f,) = check_queue_lifetime(load_config(str(pfdir)))
    assert f.severity == "warning" and "1 days" in f.title
    assert parse_duration("5d") == 432000 and parse_duration("3600s") == 3600
    assert parse_duration("2w") == 14 * 86400 and parse_duration("bogus") is None


def test_log_retention_from_logrotate(tmp_path: Path, pfdir: Path) -> None:
    conf = tmp_path / "logrotate.conf"
    conf.write_text(
        "weekly\nrotate 4\n/var/log/mail.log\n/var/log/mail.err\n{\n daily\n rotate 7\n}\n"
    )
    assert logrotate_retention("/var/log/mail.log", [str(conf)])[0] == 8
    (f,) = check_log_retention(load_config(str(pfdir)), [str(conf)])
    assert f.severity == "warning"
    conf.write_text("/var/log/mail.*\n{\n weekly\n rotate 12\n}\n")
    (f,) = check_log_retention(load_config(str(pfdir)), [str(conf)])
    assert f.severity == "ok" and "91 days" in f.title


def test_bulk_split_detected_from_master_cf(pfdir: Path) -> None:
    assert check_bulk_split(load_config(str(pfdir)))[0].severity == "warning"
    postconf(pfdir, "-M", "bulk/unix=bulk unix - - y - - smtp")
    postconf(pfdir, "-P", "bulk/unix/smtp_bind_address=192.0.2.77")
    postconf(pfdir, "-e", "sender_dependent_default_transport_maps = regexp:/etc/postfix/bulk")
    (f,) = check_bulk_split(load_config(str(pfdir)))
    assert f.severity == "ok" and "192.0.2.77" in f.evidence


def test_full_audit_runs_on_the_packaged_config(pfdir: Path) -> None:
    f = audit(load_config(str(pfdir)))
    assert {x.check for x in f} >= {
        "postfix.relay",
        "postfix.tls",
        "postfix.queue",
        "postfix.logs",
        "postfix.bulk",
    }
    assert all(x.severity != "problem" or x.fix for x in f)


def test_breaker_lookup_makes_long_blocks_safe(pfdir: Path) -> None:
    postconf(
        pfdir,
        "-e",
        "maximal_queue_lifetime = 1d",
        "transport_maps = hash:/etc/postfix/transport, socketmap:inet:127.0.0.1:10041:transport",
    )
    f = [x for x in audit(load_config(str(pfdir))) if x.check == "postfix.queue"]
    assert [x.severity for x in f] == ["ok"] and "hold" in f[0].title
