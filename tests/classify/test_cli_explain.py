"""``mailwarden explain``: the real console script, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MW = Path(sys.executable).with_name("mailwarden")


def mw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MW), *args], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )


def test_explain_json_for_a_postfix_reason() -> None:
    text = (
        "host mx01.bluewin.ch[192.0.2.7] said: 554 5.7.1 Swisscom AG IP: 203.0.113.5, You are "
        "not allowed to send us mail. Please refer to https://postmaster.bluewin.ch/x "
        "(in reply to RCPT TO command)"
    )
    p = mw("explain", text, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["reason"] == "blocked" and doc["scope"] == "ours"
    assert doc["provider"] == "swisscom" and doc["known_provider"] is True
    assert doc["rule"] == "swisscom/not-allowed"
    assert doc["cited_ip"] == "203.0.113.5"
    assert doc["url"] == "https://postmaster.bluewin.ch/x"
    assert doc["command"] == "RCPT TO" and doc["host"] == "mx01.bluewin.ch"


def test_explain_with_host_shows_issuer_and_url() -> None:
    p = mw(
        "explain",
        "550 5.7.606 Access denied, banned sending IP [192.0.2.1].",
        "--host",
        "outlook-com.olc.protection.outlook.com",
    )
    assert p.returncode == 0, p.stderr
    for word in (
        "blocked",
        "outlook",
        "microsoft",
        "https://sender.office.com/",
        "192.0.2.1",
        "outlook/banned-ip",
    ):
        assert word in p.stdout


def test_explain_internal_deferral() -> None:
    p = mw(
        "explain",
        "delivery temporarily suspended: connect to mx.down.test[127.0.25.8]:25: "
        "Connection refused",
        "--json",
    )
    doc = json.loads(p.stdout)
    assert doc["internal"] is True and doc["rule"] == "internal/suspended"
    assert doc["reason"] == "networkerror"


def test_explain_without_reply_is_a_usage_error() -> None:
    p = mw("explain")
    assert p.returncode == 2


def test_check_passes_on_shipped_tables_and_fails_on_a_broken_local_one(etc: Path) -> None:
    p = mw("explain", "--check")
    assert p.returncode == 0, p.stdout
    assert "samples ok, 0 patterns without samples" in p.stdout
    (etc / "providers").mkdir()
    (etc / "providers" / "google.toml").write_text(
        'name = "google"\ndisplay = "G"\nmx_suffixes = [".google.com"]\n'
        'postmaster_url = "https://postmaster.google.com/"\n'
        '[[pattern]]\nid = "wrong"\nreason = "mailboxfull"\nmatch = "nothing like this"\n'
        'samples = ["550 5.7.1 something else entirely"]\n'
    )
    p = mw("explain", "--check", "--json")
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    failed = {f["rule"] for f in doc["failures"]}
    # the broken local pattern, and a shipped sample that relied on the replaced google table
    assert "google/wrong" in failed and failed <= {"google/wrong", "reasons/ratelimited"}


def test_bad_local_table_is_exit_2_with_the_file_named(etc: Path) -> None:
    (etc / "reasons.toml").write_text("[[rule]\n")
    p = mw("explain", "550 5.1.1 x")
    assert p.returncode == 2
    assert "reasons.toml" in p.stderr


def test_recipient_names_the_provider_when_no_host_is_known() -> None:
    p = mw("explain", "circuit open for provider", "--recipient", "bob@gmail.com", "--json")
    doc = json.loads(p.stdout)
    assert doc["provider"] == "google" and doc["internal"] is True
