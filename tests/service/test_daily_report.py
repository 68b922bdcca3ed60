"""The daily report: built from a real store, mailed by the daemon's scheduled job through a
real aiosmtpd receiver (it must parse as HTML), once per day; ``mailwarden report`` in its
three formats, per host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from alerts.logwriter import LogWriter
from alerts.test_channels_dispatch import parse_html
from fixtures.alerts import SmtpSink
from mailwarden.breaker.machine import Transition
from mailwarden.config import Settings
from mailwarden.pipeline import analyze
from mailwarden.report.alerts import Dispatcher
from mailwarden.report.channels import build_channels
from mailwarden.report.daily import build_report, render_text
from mailwarden.service.jobs import JobContext, Scheduler, jobs_from
from mailwarden.store.breaker import BreakerStore
from mailwarden.store.db import open_engine

H = 3600.0


def _world(tmp: Path) -> tuple[str, float]:
    now = time.time()
    w = LogWriter()
    for i in range(20):  # the day before: all delivered
        w.message(now - 40 * H + i * 60, "uid:33", [f"r{i}@gmail.com"])
    for i in range(30):  # the last 24 h: Swisscom starts refusing us
        w.message(now - 20 * H + i * 60, "uid:33", [f"s{i}@gmail.com", f"t{i}@bluewin.ch"])
    for i in range(5):  # a new origin
        w.message(now - 2 * H + i * 60, "sasl:carol@example.test", [f"c{i}@gmx.net"], host="mx2")
    log = tmp / "mail.log"
    w.write(log)
    url = f"sqlite:///{tmp / 's.db'}"
    analyze([log], db_url=url)
    e = open_engine(url)
    t = Transition(
        now - 19 * H,
        "swisscom",
        "",
        "closed",
        "open",
        "rule",
        rule="swisscom/not-allowed",
        reply="554 5.7.1 You are not allowed",
        url="https://postmaster.bluewin.ch",
        until=now - 18 * H,
    )
    from dataclasses import asdict

    BreakerStore(e, "mail").save([], [asdict(t)], now)
    e.dispose()
    return url, now


def test_scheduled_daily_report_is_mailed_once_and_parses_as_html(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    url, _now = _world(tmp_path)
    settings = Settings.model_validate(
        {
            "store": {"url": url},
            "alerts": {"mail_to": ["admin@example.org"], "smarthost": smtp_sink.address},
            "service": {"public_url": "https://warden.example.org", "daily_report": "00:00"},
        }
    )
    engine = open_engine(url)
    d = Dispatcher(build_channels(settings), engine=engine, host="mail")
    ctx = JobContext(settings, engine, "mail", d, hosts=lambda: {"mail", "mx2"})
    sched = Scheduler(ctx, jobs_from(settings))
    assert sched.run_due(only="daily_report") == ["daily_report"]
    assert d.wait_idle(20)
    assert len(smtp_sink.messages) == 1
    _frm, to, msg = smtp_sink.messages[0]
    assert to == ["admin@example.org"] and "daily report" in msg["Subject"]
    page = msg.get_body(("html",)).get_content()
    p = parse_html(page)
    text = " ".join(" ".join(p.text).split())
    assert {"table", "h1", "a"} <= set(p.seen)
    assert "swisscom" in text and "blocked" in text  # the new rejection, by provider
    assert "closed -> open" in text  # the breaker event
    assert "sasl carol@example.test" in text  # the new origin
    assert 'href="https://postmaster.bluewin.ch"' in page
    assert 'href="https://warden.example.org/breaker"' in page
    plain = msg.get_body(("plain",)).get_content()
    assert "New rejections" in plain
    # the same day again (a restart, a second run): not mailed twice
    sched.run_due(only="daily_report")
    assert d.wait_idle(20)
    assert len(smtp_sink.messages) == 1
    # not due again before tomorrow's 00:00 once it ran
    assert sched.run_due() == [] or "daily_report" not in sched.run_due()
    d.close()


def test_report_document_counts_and_periods(tmp_path: Path) -> None:
    url, now = _world(tmp_path)
    doc = build_report(open_engine(url), since=now - 24 * H, until=now)
    s = doc["summary"]
    assert s["attempts"] == 30 * 2 + 5 and s["prev"]["attempts"] == 20
    assert s["bounced"] == 30 and s["sent"] == 35
    sw = next(r for r in doc["providers"] if r["provider"] == "swisscom")
    assert sw["bounced"] == 30 and sw["prev_attempts"] == 0 and sw["rejected_share"] == 1.0
    assert [k["provider"] for k in doc["new_rejections"]] == ["swisscom"]
    assert doc["new_rejections"][0]["url"] == "https://postmaster.bluewin.ch"
    assert [b["new"] for b in doc["breaker"]] == ["open"]
    assert [o["id"] for o in doc["origins_new"]] == ["carol@example.test"]
    one = build_report(open_engine(url), since=now - 24 * H, until=now, hosts=["mx2"])
    assert one["summary"]["attempts"] == 5 and one["hosts"] == ["mx2"]
    assert "swisscom" not in render_text(one).split("Breaker:")[0]


def test_report_cli_formats_and_errors(tmp_path: Path) -> None:
    url, _now = _world(tmp_path)
    env = {**os.environ, "MAILWARDEN_CONFIG": str(tmp_path / "none.toml")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailwarden.cli", "report", "--db", url, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    j = run("--since", "24h", "--format", "json")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    assert doc["schema"] == "mailwarden.daily/1" and doc["summary"]["attempts"] == 65
    h = run("--since", "24h", "--format", "html", "--host", "mail")
    assert h.returncode == 0
    parse_html(h.stdout)
    assert "hosts: mail" in h.stdout
    t = run("--since", "2d")
    assert t.returncode == 0 and "New rejections" in t.stdout
    bad = run("--format", "xml")
    assert bad.returncode == 2 and "text, html or json" in bad.stderr
    bad2 = run("--since", "yesterday-ish")
    assert bad2.returncode == 2 and "cannot read the time" in bad2.stderr
