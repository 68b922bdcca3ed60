"""The one alert model and dispatcher, through real receivers: an aiosmtpd SMTP server, an HTTP
webhook server, a syslog datagram socket; dedup and rate limits kept in a real store."""

from __future__ import annotations

import html.parser
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fixtures.alerts import SmtpSink, SyslogSink, WebhookSink
from mailwarden.breaker.machine import Transition
from mailwarden.config import Settings
from mailwarden.errors import ConfigError
from mailwarden.report.alerts import Alert, Dispatcher, EgressAdapter, from_transition
from mailwarden.report.channels import (
    MailChannel,
    SyslogChannel,
    WebhookChannel,
    build_channels,
    never_park,
)
from mailwarden.store.db import open_engine
from mailwarden.store.service import alert_deliveries, alerts


def _alert(key: str = "k1", severity: str = "critical", **kw: Any) -> Alert:
    return Alert(
        kind=kw.pop("kind", "dnsbl"),
        key=key,
        severity=severity,
        title=kw.pop("title", "192.0.2.10 listed on Spamhaus ZEN"),
        text=kw.pop("text", "Receivers using this list refuse our mail."),
        host="mx1",
        links=(("lookup", "https://check.spamhaus.org/listed/?searchterm=192.0.2.10"),),
        **kw,
    )


class HtmlCheck(html.parser.HTMLParser):
    """Parses a document and checks that every non-void element is closed in order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.seen.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(doc: str) -> HtmlCheck:
    p = HtmlCheck()
    p.feed(doc)
    p.close()
    assert not p.stack, p.stack
    return p


def test_webhook_generic_slack_and_matrix_payloads(webhook_sink: WebhookSink) -> None:
    a = _alert()
    WebhookChannel(webhook_sink.url(), token="s3cret").send(a)
    WebhookChannel(webhook_sink.url("/slack"), fmt="slack").send(a)
    WebhookChannel(webhook_sink.url("/hookshot"), fmt="matrix").send(a)
    mx = webhook_sink.url("/_matrix/client/v3/rooms/!r:example.org/send/m.room.message")
    WebhookChannel(mx, fmt="matrix").send(a)
    gen, slack, hook, matrix = webhook_sink.requests
    assert gen.method == "POST" and gen.headers["authorization"] == "Bearer s3cret"
    g = gen.json()
    assert g["event"] == "mailwarden.alert" and g["key"] == "k1" and g["host"] == "mx1"
    assert g["links"][0]["url"].startswith("https://check.spamhaus.org/")
    s = slack.json()
    assert "192.0.2.10 listed" in s["text"] and s["blocks"][0]["type"] == "section"
    assert "<https://check.spamhaus.org/listed/?searchterm=192.0.2.10|lookup>" in json.dumps(s)
    h = hook.json()
    assert hook.method == "POST" and h["msgtype"] == "m.text" and "Spamhaus" in h["text"]
    parse_html(h["formatted_body"])
    assert matrix.method == "PUT" and matrix.path.rsplit("/", 1)[1]  # a transaction id
    assert matrix.path.startswith("/_matrix/client/v3/rooms/")


def test_mail_goes_to_the_smarthost_with_text_and_html(smtp_sink: SmtpSink) -> None:
    ch = MailChannel(
        ["admin@example.org"], sender="warden@example.org", smarthost=smtp_sink.address
    )
    ch.send(_alert(title="hostile\r\nBcc: victim@example.com title"))
    assert len(smtp_sink.messages) == 1
    frm, to, msg = smtp_sink.messages[0]
    assert frm == "warden@example.org" and to == ["admin@example.org"]
    assert "Bcc" not in msg and "victim" not in to[0]  # header injection folded away
    assert msg["Subject"].startswith("[mailwarden] [critical] mx1: hostile Bcc:")
    assert msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_body(("plain",)).get_content()
    assert "Receivers using this list" in text and "https://check.spamhaus.org/" in text
    doc = msg.get_body(("html",)).get_content()
    p = parse_html(doc)
    assert "a" in p.seen and "Receivers using this list" in "".join(p.text)


def test_syslog_line_is_one_safe_rfc3164_record(syslog_sink: SyslogSink) -> None:
    ch = SyslogChannel(str(syslog_sink.path), "mail")
    ch.send(_alert(title="evil\nFake: second line", severity="critical"))
    data = syslog_sink.recv()
    assert data.startswith(b"<18>")  # mail (2) * 8 + crit (2)
    assert b"\n" not in data and b"mailwarden[" in data
    assert b"dnsbl critical: evil Fake: second line [key=k1]" in data


def test_bad_channel_settings_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="webhook_url must be http"):
        WebhookChannel("file:///etc/passwd")
    with pytest.raises(ConfigError, match="mail_to"):
        MailChannel(["not an address"], smarthost="127.0.0.1:25")
    with pytest.raises(ConfigError, match="smarthost"):
        MailChannel(["a@example.org"], smarthost="host:port")
    with pytest.raises(ConfigError, match="syslog_facility"):
        SyslogChannel("/dev/log", "nonsense")


def test_dedup_and_rate_limits_are_kept_in_the_store(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = open_engine(url)
    ch = WebhookChannel(webhook_sink.url())

    def disp() -> Dispatcher:
        return Dispatcher([ch], engine=engine, host="mx1", dedup_window=3600, rate_per_hour=3)

    d = disp()
    assert d.deliver(_alert("a")) == {"webhook": "sent"}
    assert d.deliver(_alert("a")) == {"webhook": "duplicate"}
    assert d.deliver(_alert("b")) == {"webhook": "sent"}
    assert d.deliver(_alert("c")) == {"webhook": "sent"}
    assert d.deliver(_alert("d")) == {"webhook": "rate-limited"}
    # a restarted daemon (new dispatcher, same store) still knows
    d2 = disp()
    assert d2.deliver(_alert("a")) == {"webhook": "duplicate"}
    assert d2.deliver(_alert("e")) == {"webhook": "rate-limited"}
    assert len(webhook_sink.requests) == 3
    # the daily report is never rate-limited, an info alert below the floor is stored only
    rep = Alert(kind="report", key="report:mx1:2026-11-27", severity="info", title="daily")
    assert d2.deliver(rep) == {"webhook": "sent"}
    assert d2.deliver(_alert("f", severity="info")) == {"webhook": "below-threshold"}
    with engine.connect() as c:
        stored = c.execute(select(alerts.c.key)).scalars().all()
        statuses = c.execute(select(alert_deliveries.c.status)).scalars().all()
    assert stored.count("a") == 3 and "f" in stored
    assert statuses.count("sent") == 4 and statuses.count("rate-limited") == 2


def test_a_failing_channel_is_recorded_and_the_others_still_get_it(
    tmp_path: Path, webhook_sink: WebhookSink, smtp_sink: SmtpSink
) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    webhook_sink.status = 500
    d = Dispatcher(
        [
            WebhookChannel(webhook_sink.url()),
            MailChannel(["a@example.org"], smarthost=smtp_sink.address),
        ],
        engine=engine,
        host="mx1",
    )
    d.emit(_alert("x"))
    assert d.wait_idle(10)
    d.close()
    assert d.stats.failed == 1 and d.stats.sent == 1 and len(smtp_sink.messages) == 1
    with engine.connect() as c:
        rows = c.execute(
            select(alert_deliveries.c.channel, alert_deliveries.c.status, alert_deliveries.c.error)
        ).all()
    by = {r[0]: r for r in rows}
    assert by["webhook"][1] == "failed" and "500" in by["webhook"][2]
    assert by["mail"][1] == "sent"


def test_alerts_still_go_out_when_the_store_is_down(webhook_sink: WebhookSink) -> None:
    from fixtures.alerts import free_port

    # a PostgreSQL URL where nothing listens: every store access fails
    dead = open_engine(f"postgresql://mw@127.0.0.1:{free_port()}/mw", create=False)
    d = Dispatcher([WebhookChannel(webhook_sink.url())], engine=dead, host="mx1")
    assert d.deliver(_alert("z")) == {"webhook": "sent"}
    assert d.deliver(_alert("z")) == {"webhook": "duplicate"}  # remembered in memory
    assert d.stats.store_errors >= 2 and len(webhook_sink.requests) == 1


def test_breaker_transitions_and_egress_alerts_use_the_same_dispatcher(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    from mailwarden.egress.summary import Alert as EgressAlert

    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    d = Dispatcher([WebhookChannel(webhook_sink.url())], engine=engine, host="mx1")
    t = Transition(
        time.time(),
        "swisscom",
        "",
        "closed",
        "open",
        "rule",
        rule="swisscom/not-allowed",
        reply="554 5.7.1 You are not allowed",
        url="https://postmaster.bluewin.ch",
        until=time.time() + 3600,
    )
    d.transitions([t], public_url="https://warden.example.org")
    EgressAdapter(d).notify(
        EgressAlert(
            7,
            33,
            "www-data",
            "/usr/bin/php8.2",
            "php8.2-fpm.service",
            "/var/www/shop/mailer.php",
            25,
            0.0,
            time.time(),
            3,
            0,
            {"destinations": ["198.51.100.7"], "pid": 4242},
        )
    )
    assert d.wait_idle(10)
    kinds = [r.json()["kind"] for r in webhook_sink.requests]
    assert kinds == ["breaker", "egress"]
    br, eg = (r.json() for r in webhook_sink.requests)
    assert br["severity"] == "critical" and "parked" in br["text"]
    assert {"label": "dashboard", "url": "https://warden.example.org/breaker"} in br["links"]
    assert eg["title"].startswith("www-data (/var/www/shop/mailer.php)")
    assert eg["data"]["evidence"]["destinations"] == ["198.51.100.7"]
    assert from_transition(t).key == from_transition(t).key  # same transition, same key


def test_channels_from_settings_and_never_park() -> None:
    s = Settings.model_validate(
        {
            "alerts": {
                "mail_to": ["ops@example.org"],
                "smarthost": "127.0.0.1:2525",
                "webhook_url": "http://127.0.0.1:9/x",
                "webhook_format": "slack",
                "syslog": True,
            },
            "breaker": {"admin_mail": "old@example.org"},
        }
    )
    names = [c.name for c in build_channels(s)]
    assert names == ["log", "mail", "webhook", "syslog"]
    assert never_park(s) == ["ops@example.org"]
    legacy = Settings.model_validate(
        {"breaker": {"admin_mail": "old@example.org", "mail_relay": "127.0.0.1:2525"}}
    )
    assert [c.name for c in build_channels(legacy)] == ["log", "mail"]
    assert never_park(legacy) == ["old@example.org"]
