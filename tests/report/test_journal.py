"""analyze --journal: the same report from journald records as from the log file.

The records of the recorded log are in a real journal file (fixture ``real_journal``), read by
the real journalctl: the facility match, ``--since``/``--until`` and ``-o json`` are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fixtures.journal import Journal, export_record, split_log
from mailwarden.pipeline import analyze, journal_command


@pytest.fixture
def mail_journal(real_log: Path, real_journal: Journal) -> Journal:
    """The recorded log as journald keeps it, plus a foreign mail record (dovecot), a mail
    record without MESSAGE (unparsed) and a record of another facility (not read)."""
    entries = split_log(real_log.read_bytes().splitlines(keepends=True), real_log.stat().st_mtime)
    records = [export_record(*e, monotonic=n + 1) for n, e in enumerate(entries)]
    ts, mono = entries[2][0], 3  # after the third record, at its time
    records[3:3] = [
        export_record(ts, "mail", "dovecot", None, b"imap-login: Login: user=<a>", monotonic=mono),
        export_record(ts, "mail", "postfix/smtp", 11683, None, monotonic=mono),
        export_record(ts, "mail", "sshd", 99, b"Accepted publickey", facility=4, monotonic=mono),
    ]
    real_journal.append(records)
    return real_journal


def test_the_journal_gives_the_same_report_as_the_file(
    real_log: Path, mail_journal: Journal, classifier: Any, tmp_path: Path
) -> None:
    exe, calls = mail_journal.exe, mail_journal.calls
    from_file = analyze([real_log], classifier=classifier).document
    doc = analyze(
        [],
        classifier=classifier,
        journal=journal_command(None, None, str(exe)),
        db_url=f"sqlite:///{tmp_path}/j.db",
        attempts_days=100_000,
    ).document
    assert doc["totals"] == from_file["totals"]
    assert doc["providers"] == from_file["providers"]
    assert doc["lines"]["foreign"] == 1 and doc["lines"]["unparsed"] == 1
    assert doc["sources"][0]["path"] == "journal"
    assert doc["store"]["messages"] == from_file["totals"]["messages"]
    assert "SYSLOG_FACILITY=2" in calls.read_text() and "--output=json" in calls.read_text()


def test_journal_time_window_and_missing_journalctl(mail_journal: Journal, tmp_path: Path) -> None:
    exe, calls = mail_journal.exe, mail_journal.calls
    env = {**os.environ, "PATH": f"{exe.parent}:{os.environ['PATH']}"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailwarden.cli",
            "analyze",
            "--journal",
            "--json",
            "--no-store",
            "--since",
            "2026-11-27T17:20:00Z",
            "--until",
            "2026-11-27T17:20:42.5Z",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "--since=@1795800000" in calls.read_text()
    doc = json.loads(r.stdout)
    # journalctl's --until is whole seconds (@...043, inclusive: the 17:20:43 attempt is read);
    # analyze cuts exactly
    assert doc["lines"]["outside_period"] > 0
    env["PATH"] = str(tmp_path / "empty")
    r = subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", "analyze", "--journal", "--no-store"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2 and "journalctl not found" in r.stderr
