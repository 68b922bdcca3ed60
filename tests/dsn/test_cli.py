"""``mailwarden bounce``: the real command run as a subprocess (stdin and files, JSON and table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "dsn" / "eml"
STABLE = ["recipient", "reason", "scope", "status", "replycode", "diagnostic", "rhost", "provider"]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, COLUMNS="80")
    code = "import sys; from mailwarden.cli import main; sys.argv[0] = 'mailwarden'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "bounce", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_json_has_the_stable_schema_in_order() -> None:
    p = run("--json", str(DATA / "lhost-sendmail-31.eml"))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [r["recipient"] for r in doc["recipients"]] == [
        "kijitora@example.net",
        "sabatora@example.net",
    ]
    for r in doc["recipients"]:
        assert list(r)[: len(STABLE)] == STABLE
        assert r["status"] == "5.7.0" and r["replycode"] == "552"
        assert r["rhost"] == "aspmx.l.google.com"


def test_stdin_and_feedback_report() -> None:
    p = run("--json", "-", stdin=(DATA / "arf-16.eml").read_bytes())
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)["recipients"]
    assert len(recs) == 7
    assert {r["reason"] for r in recs} == {"feedback"}
    assert {r["feedback_type"] for r in recs} == {"abuse"}


def test_table_fits_80_columns() -> None:
    p = run(str(DATA / "lhost-postfix-11.eml"))
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "kijitora@example.jp" in out and "noraneko@example.jp" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_not_a_bounce_is_a_warning_not_an_error() -> None:
    p = run("-", stdin=b"From: a@example.org\nSubject: hi\n\nhello\n")
    assert p.returncode == 1
    assert b"not a bounce" in p.stdout


def test_garbage_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    p = run("-", stdin=b"\x00\x01\x02 binary junk")
    assert p.returncode == 2
    assert b"not a mail message" in p.stderr
    p = run(str(tmp_path / "nope.eml"))
    assert p.returncode == 2
    assert b"nope.eml" in p.stderr and b"Traceback" not in p.stderr
