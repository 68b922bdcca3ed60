"""Identity: configured values win, the rest is detected; lookups normalise their input."""

from __future__ import annotations

from mailwarden.config import IdentitySettings
from mailwarden.identity import detect_identity, interface_addresses


def test_configured_identity_is_used_and_normalised() -> None:
    ident = detect_identity(
        IdentitySettings(
            ips=["94.130.34.42", "::ffff:192.0.2.7", "not-an-ip"],
            names=["Mail.Lotsearch.DE."],
            helo_names=["mail.lotsearch.de"],
            domains=["lotsearch.de"],
        ),
        use_postconf=False,
        use_interfaces=False,
    )
    assert ident.ips == {"94.130.34.42", "192.0.2.7"}
    assert ident.is_our_ip("[94.130.34.42]")
    assert not ident.is_our_ip("94.130.34.43")
    assert ident.is_our_name("MAIL.lotsearch.de.")
    assert not ident.is_our_name("mail.com")
    assert ident.sources["ips"] == "config"


def test_interfaces_are_detected_without_loopback() -> None:
    # whatever this host has, loopback and link-local never count as sending IPs
    for ip in interface_addresses():
        assert not ip.startswith("127.") and ip != "::1" and not ip.startswith("fe80")
    ident = detect_identity(IdentitySettings(), use_postconf=False)
    assert ident.ips == set(interface_addresses())


def test_master_cf_transport_helo_and_source_are_ours(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import shutil
    import subprocess
    import time

    import pytest

    if shutil.which("postconf") is None:
        pytest.skip("Postfix not installed")
    d = tmp_path / "pf"
    d.mkdir()
    for f in ("main.cf", "master.cf"):
        shutil.copy(f"/etc/postfix/{f}", d / f)
    pc = ["postconf", "-c", str(d)]
    subprocess.run(
        [*pc, "-e", "myhostname = mail.example.test", "smtp_bind_address = 192.0.2.5"], check=True
    )
    subprocess.run([*pc, "-M", "bulk/unix=bulk unix - - y - - smtp"], check=True)
    subprocess.run(
        [
            *pc,
            "-P",
            "bulk/unix/smtp_bind_address=192.0.2.6",
            "bulk/unix/smtp_helo_name=bulk.example.test",
        ],
        check=True,
    )
    for f in d.iterdir():
        os.utime(f, (time.time() - 60, time.time() - 60))
    ident = detect_identity(IdentitySettings(), config_dir=str(d))
    assert {"192.0.2.5", "192.0.2.6"} <= ident.ips
    assert {"mail.example.test", "bulk.example.test"} <= ident.helo_names
