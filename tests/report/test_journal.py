"""analyze --journal: the same report from journald records as from the log file.

journalctl is replaced by a script that prints the records of the recorded log as
``journalctl -o json`` does (and notes how it was called); no systemd is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailwarden.pipeline import analyze, journal_command
from mailwarden.sources.syslog import Envelope


@pytest.fixture
def fake_journalctl(real_log: Path, tmp_path: Path) -> tuple[Path, Path]:
    env = Envelope(reference=real_log.stat().st_mtime)
    records = []
    for n, raw in enumerate(real_log.read_bytes().splitlines(keepends=True)):
        ts, host, program, pid, msg = env.split(raw)  # type: ignore[misc]
        records.append(
            {
                "__CURSOR": f"s=1;i={n}",
                "__REALTIME_TIMESTAMP": str(int(ts * 1e6)),
                "_HOSTNAME": host,
                "SYSLOG_IDENTIFIER": program,
                "SYSLOG_PID": str(pid),
                "MESSAGE": msg.decode(),
            }
        )
    records.insert(
        3,
        {
            "__REALTIME_TIMESTAMP": records[2]["__REALTIME_TIMESTAMP"],
            "_HOSTNAME": "mail",
            "SYSLOG_IDENTIFIER": "dovecot",
            "MESSAGE": "imap-login: Login: user=<a>",
        },
    )
    data = tmp_path / "journal.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    calls = tmp_path / "calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "journalctl"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"sys.stdout.write(open({str(data)!r}).read())\n"
    )
    exe.chmod(0o755)
    return exe, calls


def test_the_journal_gives_the_same_report_as_the_file(
    real_log: Path, fake_journalctl: tuple[Path, Path], classifier: Any, tmp_path: Path
) -> None:
    exe, calls = fake_journalctl
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


def test_journal_time_window_and_missing_journalctl(
    fake_journalctl: tuple[Path, Path], tmp_path: Path
) -> None:
    exe, calls = fake_journalctl
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
    assert doc["lines"]["outside_period"] > 0  # the fake ignores --since: analyze cuts exactly
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
