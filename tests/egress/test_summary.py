"""Summaries, retention and alerts in the store (SQLite), and the alerts' way out (the one
dispatcher of report.alerts) against a real HTTP server on loopback."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import func, select

from fixtures.alerts import WebhookSink
from mailwarden.egress.summary import Alert, Recorder, alerts, is_remote, top
from mailwarden.events import EgressConnect
from mailwarden.report.alerts import Dispatcher, EgressAdapter
from mailwarden.report.channels import WebhookChannel
from mailwarden.store.db import open_engine
from mailwarden.store.egress import egress_events
from mailwarden.store.service import alert_deliveries


class Captured:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def notify(self, alert: Alert) -> None:
        self.alerts.append(alert)


def ev(ts: float, **kw: object) -> EgressConnect:
    base: dict[str, object] = dict(
        source="ebpf",
        daddr="192.0.2.1",
        dport=25,
        uid=33,
        user="www-data",
        exe="/usr/bin/php",
        script="/w/a.php",
        pid=5,
    )
    base.update(kw)
    return EgressConnect(ts=ts, **base)  # type: ignore[arg-type]


def recorder(tmp_path: Path, **kw: int) -> tuple[Recorder, Captured]:
    cap = Captured()
    return Recorder(open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"), notifier=cap, **kw), cap


def test_one_alert_per_who_and_port_per_window(tmp_path: Path) -> None:
    rec, cap = recorder(tmp_path, alert_window=3600)
    t0 = 7200.0
    rec.record([ev(t0), ev(t0 + 1, daddr="192.0.2.2", pid=6), ev(t0 + 2, dport=587)])
    rec.record([ev(t0 + 10, verdict="blocked")])
    # the alert carries what its batch knew: two attempts on 25 already
    assert [(a.port, a.count) for a in cap.alerts] == [(25, 2), (587, 1)]
    rec.record([ev(t0 + 3600)])  # next window: alerts again
    assert len(cap.alerts) == 3
    stored = {(a["port"], a["window_start"]): a for a in alerts(rec.engine)}
    a = stored[(25, t0)]
    assert a["count"] == 3 and a["blocked"] == 1
    assert a["evidence"]["destinations"] == ["192.0.2.1", "192.0.2.2"]
    assert a["evidence"]["pids"] == [5, 6]
    assert a["evidence"]["script"] == "/w/a.php"


def test_mta_and_loopback_are_counted_never_alerted(tmp_path: Path) -> None:
    rec, cap = recorder(tmp_path)
    rec.record(
        [
            ev(
                100.0,
                uid=103,
                user="postfix",
                exe="/usr/lib/postfix/sbin/smtp",
                script="",
                mta=True,
            ),
            ev(101.0, daddr="127.0.0.1"),
            ev(102.0, daddr="::1", family=6),
            ev(103.0, daddr="::ffff:127.0.0.1", family=6),
        ]
    )
    assert cap.alerts == []
    rows = {(r["user"], r["exe"]): r for r in top(rec.engine)}
    assert rows[("postfix", "/usr/lib/postfix/sbin/smtp")]["count"] == 1
    assert rows[("www-data", "/usr/bin/php")]["count"] == 3
    assert not is_remote("127.9.9.9") and is_remote("10.250.0.2") and is_remote("2001:db8::1")


def test_summary_groups_counts_destinations_and_times(tmp_path: Path) -> None:
    rec, _ = recorder(tmp_path)
    rec.record(
        [
            ev(50.0),
            ev(40.0, daddr="192.0.2.9"),
            ev(60.0),
            ev(55.0, verdict="blocked"),
            ev(58.0, provider="google"),
            ev(59.0, unit="php8.2-fpm.service"),
        ]
    )
    rows = top(rec.engine)
    key = {(r["allowed"], r["provider"], r["unit"]): r for r in rows}
    main = key[(True, "", "")]
    assert (main["count"], main["destinations"]) == (3, 2)
    assert (main["first_seen"], main["last_seen"]) == (40.0, 60.0)
    assert key[(False, "", "")]["count"] == 1
    assert key[(True, "google", "")]["count"] == 1
    assert key[(True, "", "php8.2-fpm.service")]["count"] == 1
    assert rows[0] is main or rows[0]["count"] == 3  # busiest first


def test_raw_events_are_pruned_after_the_window(tmp_path: Path) -> None:
    rec, _ = recorder(tmp_path, raw_days=7)
    now = time.time()
    rec.record([ev(now - 8 * 86400), ev(now - 6 * 86400)])
    rec._last_prune = 0.0
    rec.record([ev(now)])
    with rec.engine.connect() as c:
        n = c.execute(select(func.count()).select_from(egress_events)).scalar_one()
    assert n == 2  # the 8-day-old raw event is gone ...
    assert top(rec.engine)[0]["count"] == 3  # ... but still counted in the summary


def test_alerts_take_the_one_alert_path_to_a_real_webhook(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    """The recorder's alerts go through report.alerts (as in the daemon and ``egress ingest``):
    host-tagged, stored with their delivery, posted in the [alerts] webhook form."""
    db = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    d = Dispatcher([WebhookChannel(webhook_sink.url("/alert"))], engine=db, host="mx1")
    rec = Recorder(db, host="mx1", notifier=EgressAdapter(d))
    rec.record([ev(1000.0, cmdline=("php", "a.php"))])
    assert d.wait_idle(10)
    d.close()
    (req,) = webhook_sink.requests
    body = req.json()
    assert body["kind"] == "egress" and body["host"] == "mx1" and body["data"]["port"] == 25
    assert body["key"].startswith("egress:mx1:33:")
    assert body["data"]["evidence"]["cmdline"] == ["php", "a.php"]
    assert "www-data" in body["title"] and "on mx1" in body["title"]
    with db.connect() as c:
        assert c.execute(select(alert_deliveries.c.status)).scalars().all() == ["sent"]


def test_a_failing_channel_does_not_break_recording(tmp_path: Path) -> None:
    db = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    hook = WebhookChannel("http://127.0.0.1:9/none", timeout=0.5)  # discard port: refused
    d = Dispatcher([hook], engine=db, host="mx1")
    rec = Recorder(db, host="mx1", notifier=EgressAdapter(d))
    assert len(rec.record([ev(1000.0)])) == 1
    assert d.wait_idle(10)
    d.close()
    assert d.stats.failed == 1
    with db.connect() as c:
        row = c.execute(select(alert_deliveries.c.status, alert_deliveries.c.error)).one()
    assert row[0] == "failed" and "refused" in row[1].lower()
