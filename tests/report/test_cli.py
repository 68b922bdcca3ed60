"""The analyze and store commands as a user runs them (real processes, real files)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from mailwarden.cli import analyze as cli_analyze
from mailwarden.report.render import render
from mailwarden.tables import data_dir

SCHEMA = json.loads(
    (Path(cli_analyze.__file__).parents[1] / "report" / "analyze.schema.json").read_text()
)


def mw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=e,
        check=False,
    )


def test_json_output_validates_against_the_documented_schema(
    real_log: Path, tmp_path: Path
) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    db = f"sqlite:///{tmp_path}/cli.db"
    for args in (["--no-store"], ["--db", db], ["--db", db], ["--no-store", "--show-unparsed"]):
        r = mw("analyze", "--json", *args, str(real_log))
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        jsonschema.validate(doc, SCHEMA)
    assert doc["store"] is None and doc["unparsed"] == []


def test_schema_rejects_a_broken_document(real_log: Path) -> None:
    doc = json.loads(mw("analyze", "--json", "--no-store", str(real_log)).stdout)
    doc["providers"][0]["rejections"] = [{"reason": "blocked"}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)


def test_human_report_fits_in_80_columns(real_log: Path, synthetic_log: Path) -> None:
    r = mw("analyze", "--no-store", str(real_log), env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert max(len(line) for line in out) <= 80
    text = r.stdout
    for needle in (
        "swisscom.test",
        "blocked",
        "Swisscom AG",
        "uid 33 (www-data)",
        "Postfix's own deferrals",
        "Inbound",
    ):
        assert needle in text
    doc: dict[str, Any] = json.loads(
        mw("analyze", "--json", "--no-store", str(synthetic_log)).stdout
    )
    buf = io.StringIO()
    render(doc, Console(file=buf, width=80, force_terminal=False))
    assert max(len(line) for line in buf.getvalue().splitlines()) <= 80


def test_no_file_reads_the_configured_log_or_the_bundled_sample(
    real_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "mailwarden.toml"
    cfg.write_text(f'[log]\nfiles = ["{real_log}"]\n')
    r = mw("analyze", "--json", "--no-store", env={"MAILWARDEN_CONFIG": str(cfg)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sources"][0]["path"] == str(real_log)
    assert r.stderr == ""
    monkeypatch.setattr("mailwarden.config.DEFAULT_LOG_CANDIDATES", (str(tmp_path / "none"),))
    paths, note = cli_analyze.default_logs()
    assert paths == [data_dir() / "samples" / "postfix-sample.log"]
    assert "bundled sample" in note


def test_bad_options_and_files_are_clear_errors(tmp_path: Path, real_log: Path) -> None:
    r = mw("analyze", "--no-store", "--since", "last tuesday-ish", str(real_log))
    assert r.returncode == 2 and "cannot read the time" in r.stderr
    r = mw("analyze", "--no-store", str(tmp_path / "nope.log"))
    assert r.returncode == 2 and "nope.log" in r.stderr
    r = mw("analyze", "--db", "mysql://x@y/z", str(real_log))
    assert r.returncode == 2 and "unsupported database" in r.stderr
    r = mw("analyze", "--json", "--no-store", str(real_log), str(tmp_path / "gone.log"))
    assert r.returncode == 1  # a warning: one file could not be read, the rest was analysed
    assert any("gone.log" in e for e in json.loads(r.stdout)["errors"])


def test_parse_time_forms() -> None:
    now = 1_795_800_000.0
    assert cli_analyze.parse_time("2h", now=now) == now - 7200
    assert cli_analyze.parse_time("7d", now=now) == now - 7 * 86400
    assert cli_analyze.parse_time("2026-11-27T17:00:00Z") == 1_795_798_800.0
    assert cli_analyze.parse_time("2026-11-27T18:00:00+01:00") == 1_795_798_800.0
    assert cli_analyze.parse_time("yesterday", now=now) < cli_analyze.parse_time("today", now=now)


def test_store_prune_and_info(synthetic_log: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/p.db"
    cfg = tmp_path / "mw.toml"
    cfg.write_text("[store]\nattempts_days = 100000\n")
    env = {"MAILWARDEN_CONFIG": str(cfg)}
    r = mw("analyze", "--json", "--db", db, str(synthetic_log), env=env)
    stored = json.loads(r.stdout)["store"]
    assert stored["attempts"] > 0 and stored["attempts_past_retention"] == 0
    r = mw("store", "prune", "--db", db, "--attempts-days", "1", "--dry-run", env=env)
    assert r.returncode == 0 and f"would delete: {stored['attempts']} attempts" in r.stdout
    r = mw("store", "prune", "--db", db, "--attempts-days", "1", env=env)
    assert f"deleted: {stored['attempts']} attempts" in r.stdout
    r = mw("store", "info", "--db", db, env=env)
    assert "attempts: 0" in r.stdout and "daily_rollups:" in r.stdout
    assert "daily_rollups: 0" not in r.stdout  # rollups outlive the attempts


def test_human_report_says_how_many_replies_came_from_an_earlier_mx() -> None:
    """The bundled sample has greeting blocks at a first MX: the human report says how many of
    a kind's count are such replies, as the JSON's ``mx_replies`` does."""
    sample = data_dir() / "samples" / "postfix-sample.log"
    doc: dict[str, Any] = json.loads(mw("analyze", "--json", "--no-store", str(sample)).stdout)
    kinds = [k for p in doc["providers"] for k in p["rejections"] if k["mx_replies"]]
    assert kinds
    buf = io.StringIO()
    render(doc, Console(file=buf, width=120, force_terminal=False))
    shown = [
        int(n.replace(",", ""))
        for n in re.findall(r"([\d,]+) from an MX before the next", buf.getvalue())
    ]
    # every kind shown (the report lists the first few per provider) carries its own figure
    assert shown and set(shown) <= {k["mx_replies"] for k in kinds}
