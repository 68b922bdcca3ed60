"""``mailwarden trace`` through its real entry point: output, JSON schema, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SEED = (
    "from mail.com ([94.130.34.42]) by smtp-27.iol.local with SMTP id itOWeYZ6O42IFitOWe35TR;"
    " Tue, 13 Feb 2018 03:54:09 +0100"
)
HOP_KEYS = {
    "parsed",
    "ip",
    "rdns",
    "helo",
    "ident",
    "by",
    "with",
    "id",
    "envfrom",
    "auth",
    "date",
    "findings",
}


@pytest.fixture
def env(etc: Path, tmp_path: Path) -> dict[str, str]:
    (etc / "mailwarden.toml").write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[identity]\nips = ["94.130.34.42"]\nnames = ["mail.lotsearch.de"]\n'
        'helo_names = ["mail.lotsearch.de"]\n'
    )
    return {**os.environ, "MAILWARDEN_ETC": str(etc), "COLUMNS": "200"}


def mw(env: dict[str, str], *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", "trace", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_seed_json_from_stdin(env: dict[str, str]) -> None:
    p = mw(env, "-", "--json", stdin=f"Received: {SEED}\nMessage-ID: <m@x>\n\nbody\n".encode())
    assert p.returncode == 1, p.stderr  # findings: exit 1
    doc = json.loads(p.stdout)
    hop = doc["hops"][0]
    assert hop.keys() >= HOP_KEYS
    assert (hop["helo"], hop["rdns"], hop["ip"], hop["parsed"]) == (
        "mail.com",
        "",
        "94.130.34.42",
        True,
    )
    assert hop["ident"] == "" and hop["envfrom"] == "" and hop["auth"] == ""
    assert hop["date"] == "2018-02-13T03:54:09+01:00"
    codes = {f["code"] for f in hop["findings"]}
    assert {"no-rdns", "helo-bare-domain", "boundary"} <= codes
    assert doc["verdict"]["kind"] == "direct" and doc["verdict"]["boundary"] == 1
    assert doc["message_id"] == "<m@x>"
    assert doc["identity"]["helo_names"] == ["mail.lotsearch.de"]
    assert any("no mailwarden store" in n for n in doc["notes"])


def test_human_output_names_the_helo_and_the_verdict(env: dict[str, str], tmp_path: Path) -> None:
    f = tmp_path / "seed.eml"
    f.write_bytes(f"Received: {SEED}\n\n".encode())
    p = mw(env, str(f))
    assert p.returncode == 1
    out = " ".join(p.stdout.split())
    assert "HELO mail.com" in out and "no reverse DNS recorded" in out
    assert "Verdict: sent directly from this IP by another program" in out


def test_pasted_value_and_non_relay_lines(env: dict[str, str]) -> None:
    p = mw(env, "-", "--json", stdin=(SEED + "\n").encode())
    assert json.loads(p.stdout)["hops"][0]["helo"] == "mail.com"
    p = mw(
        env,
        "-",
        "--json",
        stdin=b"Received: (qmail 1 invoked by uid 33); 1 Jan 2024 00:00:00 -0000\n\n",
    )
    assert p.returncode == 0
    hop = json.loads(p.stdout)["hops"][0]
    assert hop["parsed"] is False and hop["ip"] == "" and hop["helo"] == ""


def test_errors_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    p = mw(env, str(tmp_path / "missing.eml"))
    assert p.returncode == 2 and "cannot read" in p.stderr
    p = mw(env, "-", stdin=b"Subject: no hops\n\nbody\n")
    assert p.returncode == 2 and "no Received header" in p.stderr
