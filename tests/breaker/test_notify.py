"""Breaker transitions in words, and the one alert path for the CLI: ``mailwarden breaker
open/close`` run outside the daemon alert through ``report.alerts`` (the ``[alerts]`` channels,
dedup and rate limits, the ``alerts`` table), checked against a real HTTP receiver on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fixtures.alerts import WebhookSink
from mailwarden import cli
from mailwarden.breaker.machine import Transition
from mailwarden.breaker.notify import describe
from mailwarden.store.db import open_engine
from mailwarden.store.service import alert_deliveries, alerts

T = Transition(
    ts=1795800000.0,
    provider="swisscom",
    ip="",
    old="closed",
    new="open",
    actor="rule",
    rule="default/blocklist",
    reply="554 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org",
    issuer="spamhaus",
    url="https://check.spamhaus.org/",
    until=1795807200.0,
    level=1,
)


def test_describe_says_what_happens_and_names_the_issuer() -> None:
    text = describe(T)
    assert "closed -> open by rule default/blocklist" in text
    assert "parked" in text and "2h" in text
    assert "spamhaus" in text and "Every receiver using this list" in text


def _config(tmp_path: Path, webhook: str, extra: str = "") -> Path:
    cfg = tmp_path / "mw.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[store]\nurl = "sqlite:///{tmp_path / "mw.db"}"\n'
        f'[log]\nhost = "mx-cli"\n'
        f'[breaker]\npostfix_config = "{tmp_path / "no-postfix"}"\n'
        f'[alerts]\nwebhook_url = "{webhook}"\nmin_severity = "info"\n{extra}'
    )
    return cfg


def _invoke(*args: str) -> tuple[int, str]:
    cli._register()
    r = CliRunner().invoke(cli.app, list(args))
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.output


def test_cli_open_close_alert_through_the_dispatcher(
    tmp_path: Path, etc: Path, monkeypatch: pytest.MonkeyPatch, webhook_sink: WebhookSink
) -> None:
    cfg = _config(tmp_path, webhook_sink.url("/alerts"))
    monkeypatch.setenv("MAILWARDEN_CONFIG", str(cfg))
    code, out = _invoke("breaker", "open", "gmx", "--for", "2h", "--reason", "delisting asked")
    assert code == 0, out
    code, out = _invoke("breaker", "close", "gmx", "--no-release", "--note", "done")
    assert code == 0, out
    # the webhook got both transitions in the generic form of [alerts], host-tagged
    bodies = [r.json() for r in webhook_sink.requests]
    assert [b["event"] for b in bodies] == ["mailwarden.alert"] * 2
    assert [(b["kind"], b["data"]["old"], b["data"]["new"]) for b in bodies] == [
        ("breaker", "closed", "open"),
        ("breaker", "open", "closed"),
    ]
    assert all(b["host"] == "mx-cli" and b["key"].startswith("breaker:mx-cli:gmx:") for b in bodies)
    assert "delisting asked" in bodies[0]["text"]
    # ... and the dispatcher recorded alert and delivery, as the daemon's does
    eng = open_engine(f"sqlite:///{tmp_path / 'mw.db'}")
    with eng.connect() as c:
        rows = c.execute(select(alerts.c.kind, alerts.c.host, alerts.c.severity)).all()
        sent = c.execute(select(alert_deliveries.c.channel, alert_deliveries.c.status)).all()
    assert rows == [("breaker", "mx-cli", "critical"), ("breaker", "mx-cli", "info")]
    assert sorted(sent) == [
        ("log", "sent"),
        ("log", "sent"),
        ("webhook", "sent"),
        ("webhook", "sent"),
    ]
    eng.dispose()


def test_cli_alerts_obey_the_rate_limit_of_alerts(
    tmp_path: Path, etc: Path, monkeypatch: pytest.MonkeyPatch, webhook_sink: WebhookSink
) -> None:
    """Limits live in the store: three separate CLI runs share the hourly budget of 2."""
    cfg = _config(tmp_path, webhook_sink.url(), "rate_per_hour = 2\n")
    monkeypatch.setenv("MAILWARDEN_CONFIG", str(cfg))
    for provider in ("gmx", "yahoo", "orange"):
        assert _invoke("breaker", "open", provider, "--reason", "by hand")[0] == 0
    assert [r.json()["data"]["provider"] for r in webhook_sink.requests] == ["gmx", "yahoo"]
    eng = open_engine(f"sqlite:///{tmp_path / 'mw.db'}")
    with eng.connect() as c:
        st = c.execute(
            select(alert_deliveries.c.status).where(alert_deliveries.c.channel == "webhook")
        ).scalars()
        assert sorted(st) == ["rate-limited", "sent", "sent"]
    eng.dispose()


def test_old_breaker_webhook_setting_still_reaches_the_one_path(
    tmp_path: Path, etc: Path, monkeypatch: pytest.MonkeyPatch, webhook_sink: WebhookSink
) -> None:
    """``[breaker] webhook_url`` (the first version's) feeds the same dispatcher."""
    cfg = tmp_path / "mw.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[store]\nurl = "sqlite:///{tmp_path / "mw.db"}"\n'
        f'[breaker]\npostfix_config = "{tmp_path / "no"}"\nwebhook_url = "{webhook_sink.url()}"\n'
    )
    monkeypatch.setenv("MAILWARDEN_CONFIG", str(cfg))
    assert _invoke("breaker", "open", "gmx", "--reason", "x")[0] == 0
    [req] = webhook_sink.requests
    doc = req.json()
    assert doc["event"] == "mailwarden.alert" and doc["severity"] == "critical"
    assert json.dumps(doc["data"]).count('"gmx"') == 1
