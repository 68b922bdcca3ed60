"""The bulk-transport split, applied with the real postconf to a test configuration and read
back by the doctor's audit; sender patterns are checked by the real `postmap -q`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mailwarden.errors import ValidationError
from mailwarden.postfix.bulk import apply, plan, sender_regexp
from mailwarden.reputation.postfix_audit import check_bulk_split, load_config

needs_postfix = pytest.mark.skipif(shutil.which("postconf") is None, reason="Postfix not installed")


@pytest.fixture
def pfdir(tmp_path: Path) -> Path:
    d = tmp_path / "pf"
    d.mkdir()
    for f in ("main.cf", "master.cf"):
        shutil.copy(Path("/etc/postfix") / f, d / f)
    for f in d.iterdir():
        os.utime(f, (time.time() - 60, time.time() - 60))
    return d


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "news letter@x.com",
        "a@b@c.com",
        "x@exa_mple.com",
        "newsletter",
        "x@-bad.com",
        "x@example.com\nrelayhost=evil",
    ],
)
def test_bad_sender_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        sender_regexp(bad)


def test_bad_ip_and_helo_are_refused() -> None:
    with pytest.raises(ValidationError):
        plan(["news@example.com"], "192.0.2.300")
    with pytest.raises(ValidationError):
        plan(["news@example.com"], "192.0.2.3", helo="bad helo")


@needs_postfix
def test_patterns_match_what_they_say_in_postfix(tmp_path: Path) -> None:
    table = tmp_path / "senders"
    table.write_text(
        "\n".join(
            f"{sender_regexp(p)} bulk:"
            for p in ["newsletter@example.com", "*@news.example.com", "bulk-*@shop.test"]
        )
        + "\n"
    )

    def q(addr: str) -> str:
        r = subprocess.run(
            ["postmap", "-q", addr, f"regexp:{table}"], capture_output=True, text=True
        )
        return r.stdout.strip()

    assert q("newsletter@example.com") == "bulk:"
    assert q("NEWSLETTER@Example.com") == "bulk:"  # regexp tables are case-insensitive
    assert q("anyone@news.example.com") == "bulk:"
    assert q("bulk-2026@shop.test") == "bulk:"
    assert q("newsletter@example.com.evil.test") == ""
    assert q("xnewsletter@example.com") == ""
    assert q("billing@example.com") == ""


@needs_postfix
def test_apply_then_audit_sees_the_split(pfdir: Path) -> None:
    p = plan(
        ["newsletter@example.com"], "192.0.2.77", helo="bulk.example.com", config_dir=str(pfdir)
    )
    assert "smtp_bind_address=192.0.2.77" in p.render()
    apply(p)
    cfg = load_config(str(pfdir))
    assert cfg.services["bulk/unix"]["smtp_bind_address"] == "192.0.2.77"
    assert cfg.services["bulk/unix"]["smtp_helo_name"] == "bulk.example.com"
    (f,) = check_bulk_split(cfg)
    assert f.severity == "ok"
    # idempotent: applying twice keeps one map reference
    apply(
        plan(
            ["newsletter@example.com"],
            "192.0.2.77",
            config_dir=str(pfdir),
            existing_maps=cfg.get("sender_dependent_default_transport_maps"),
        )
    )
    assert (
        load_config(str(pfdir)).get("sender_dependent_default_transport_maps")
        == f"regexp:{pfdir}/mailwarden_bulk_senders"
    )


@needs_postfix
def test_cli_prints_then_applies(pfdir: Path) -> None:
    import sys

    cmd = [
        sys.executable,
        "-m",
        "mailwarden.cli",
        "postfix",
        "bulk-transport",
        "--sender",
        "*@news.example.com",
        "--bind",
        "192.0.2.88",
        "--helo",
        "bulk.example.com",
        "-c",
        str(pfdir),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "smtp_bind_address=192.0.2.88" in r.stdout
    assert "sender_dependent_default_transport_maps" not in (pfdir / "main.cf").read_text()
    r = subprocess.run([*cmd, "--apply"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert load_config(str(pfdir)).services["bulk/unix"]["smtp_bind_address"] == "192.0.2.88"
    bad = subprocess.run(
        [*cmd[:-4], "--bind", "192.0.2.888", "-c", str(pfdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "bad IP address" in bad.stderr
