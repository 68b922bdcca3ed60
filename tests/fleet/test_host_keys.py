"""Breaker and egress records keyed by host: two hosts sharing one store (a real throwaway
PostgreSQL, and SQLite) keep independent breakers for the same provider and their own egress
records; the fleet views (CLI, dashboard, /metrics, daily report) list both, per-host views one.
Stores made before the host key are upgraded in place and their rows claimed by the first host.

Real parts: the log parser, classifier and rules, the breaker engine with its store, the
dashboard app (FastAPI test client), the Prometheus text parser, the typer CLI."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Column, MetaData, Table, insert, inspect, select
from typer.testing import CliRunner

from breaker.test_engine import CLASSIFIER, RULES, SWISS_BLOCK, deliveries
from mailwarden import cli
from mailwarden.breaker.engine import Engine
from mailwarden.breaker.machine import Machine
from mailwarden.config import Settings
from mailwarden.egress.summary import Recorder, alerts, summary_key, top
from mailwarden.errors import ConfigError
from mailwarden.events import EgressConnect
from mailwarden.postfix.socketmap import EnforcementView, write_view
from mailwarden.report.daily import build_report
from mailwarden.report.metrics import registry
from mailwarden.store.breaker import (
    STATE_FIELDS,
    BreakerStore,
    breaker_hits,
    breaker_hosts,
    breaker_state,
    breaker_transitions,
    fleet_history,
    fleet_states,
)
from mailwarden.store.db import open_engine
from mailwarden.store.egress import egress_alerts, egress_events, egress_summary
from mailwarden.web.app import create_app
from mailwarden.web.services import EngineControl
from web.conftest import TOKEN
from web.test_app import HTML, login

HOSTS = ("mx-a", "mx-b")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


class Host:
    """One host's breaker as ``mailwarden run`` wires it (store keyed by its name, its own
    enforcement view), without the Postfix hooks."""

    def __init__(self, name: str, url: str, tmp: Path) -> None:
        self.name = name
        self.db = open_engine(url)
        self.view = tmp / f"view-{name}.json"
        self.sent: list[Any] = []
        self.engine = self.make()

    def make(self) -> Engine:
        e = Engine(
            rules=RULES,
            classifier=CLASSIFIER,
            machine=Machine(RULES, probe_recipients=2, probe_timeout=60),
            store=BreakerStore(self.db, self.name),
            publisher=lambda v, n: write_view(self.view, v, n),
            notify=self.sent.extend,
        )
        e.load()
        e.publish()
        return e

    def parked(self) -> dict[str, Any]:
        return dict(EnforcementView.load(self.view).providers)


@pytest.fixture
def fleet(url: str, tmp_path: Path) -> Iterator[dict[str, Host]]:
    hosts = {h: Host(h, url, tmp_path) for h in HOSTS}
    try:
        yield hosts
    finally:
        for h in hosts.values():
            h.db.dispose()


def test_two_hosts_breakers_for_one_provider_are_independent(fleet: dict[str, Host]) -> None:
    a, b = fleet["mx-a"], fleet["mx-b"]
    # mx-a's Postfix gets the Swisscom block: only mx-a parks Swisscom
    [block] = deliveries(SWISS_BLOCK)
    obs = a.engine.observe(block)
    assert obs is not None and [t.new for t in obs.transitions] == ["open"]
    assert "swisscom" in a.parked()
    assert b.engine.refresh() is False  # mx-b's stored states did not change
    assert b.parked() == {} and b.engine.machine.get("swisscom").state == "closed"
    # mx-b parks Swisscom by hand and closes it again: mx-a's stays open, with its rule
    b.engine.open("swisscom", duration=None, note="testing mx-b")
    b.engine.close("swisscom", note="done")
    a2 = a.make()  # a restart of mx-a's daemon reads its own rows only
    st = a2.machine.get("swisscom")
    assert (st.state, st.rule) == ("open", "swisscom/not-allowed")
    assert "swisscom" in a.parked() and b.parked() == {}
    # a second block on mx-b later opens mx-b's own breaker at level 1, not mx-a's
    b.engine.observe(block)
    assert b.engine.machine.get("swisscom").level == 1
    assert BreakerStore(a.db, "mx-a").load_states()[0]["trips"] == 1
    # fleet views list both hosts; a host's view only its own
    rows = {(r["host"], r["provider"]): r["state"] for r in fleet_states(a.db)}
    assert rows == {("mx-a", "swisscom"): "open", ("mx-b", "swisscom"): "open"}
    assert {r["host"] for r in fleet_states(a.db, "mx-b")} == {"mx-b"}
    hist = fleet_history(a.db)
    assert {(h["host"], h["old"], h["new"], h["actor"]) for h in hist} == {
        ("mx-a", "closed", "open", "rule"),
        ("mx-b", "closed", "open", "person"),
        ("mx-b", "open", "closed", "person"),
        ("mx-b", "closed", "open", "rule"),
    }
    assert [h["actor"] for h in fleet_history(a.db, host="mx-a")] == ["rule"]
    assert breaker_hosts(a.db) == ["mx-a", "mx-b"]


def test_rule_hits_count_per_host(fleet: dict[str, Host]) -> None:
    """An N/window trigger counts one host's hits: two hosts' single hits do not add up."""
    a, b = fleet["mx-a"], fleet["mx-b"]
    now = time.time()
    a.engine.store.add_hit(now, "orange", "", "default/ratelimited-ours")  # type: ignore[union-attr]
    b.engine.store.add_hit(now, "orange", "", "default/ratelimited-ours")  # type: ignore[union-attr]
    assert len(BreakerStore(a.db, "mx-a").hits_since(now - 10)) == 1
    assert BreakerStore(a.db, "mx-c").newest_rule_activity() == 0.0
    assert BreakerStore(a.db, "mx-b").newest_rule_activity() == pytest.approx(now)


def _samples(db: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    text = generate_latest(registry(db, process=False)).decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _egress(ts: float, **kw: Any) -> EgressConnect:
    base: dict[str, Any] = dict(
        source="ebpf", daddr="192.0.2.7", dport=25, uid=33, user="www-data",
        exe="/usr/bin/php8.2", script="/var/www/shop/mail.php", pid=4400, verdict="blocked",
    )  # fmt: skip
    base.update(kw)
    return EgressConnect(ts=ts, **base)


def test_fleet_and_host_views_of_metrics_report_and_egress(fleet: dict[str, Host]) -> None:
    a, b = fleet["mx-a"], fleet["mx-b"]
    a.engine.observe(deliveries(SWISS_BLOCK)[0])
    now = time.time()
    # the same script on both hosts: one summary row, one alert each (no cross-host dedup)
    for h in (a, b):
        got: list[Any] = []

        class Cap:
            def notify(self, alert: Any, got: list[Any] = got) -> None:
                got.append(alert)

        rec = Recorder(h.db, host=h.name, notifier=Cap())
        rec.record([_egress(now - 5), _egress(now - 4, daddr="192.0.2.8")])
        assert [x.host for x in got] == [h.name]
    assert {(r["host"], r["count"]) for r in top(a.db)} == {("mx-a", 2), ("mx-b", 2)}
    assert [r["host"] for r in top(a.db, host="mx-b")] == ["mx-b"]
    assert sorted(x["host"] for x in alerts(a.db)) == ["mx-a", "mx-b"]
    assert [x["host"] for x in alerts(a.db, host="mx-a")] == ["mx-a"]
    # /metrics: host labels on breaker and egress series
    s = _samples(a.db)
    states = {
        (lab["host"], lab["provider"], lab["state"]): v for lab, v in s["mailwarden_breaker_state"]
    }
    assert states[("mx-a", "swisscom", "open")] == 1.0
    assert ("mx-b", "swisscom", "open") not in states
    trs = {(lab["host"], lab["to"]): v for lab, v in s["mailwarden_breaker_transitions_total"]}
    assert trs == {("mx-a", "open"): 1.0}
    conns = {
        (lab["host"], lab["verdict"]): v for lab, v in s["mailwarden_egress_connections_total"]
    }
    assert conns == {("mx-a", "blocked"): 2.0, ("mx-b", "blocked"): 2.0}
    assert {lab["host"] for lab, _ in s["mailwarden_egress_alerts_total"]} == set(HOSTS)
    # the daily report: per host from the real columns, the fleet's from both
    t0 = fleet_history(a.db)[0]["ts"]  # the log line's time
    since, until = min(t0, now) - 3600, max(t0, now) + 60
    with a.db.connect() as conn:
        fleet_doc = build_report(conn, since=since, until=until)
        doc_b = build_report(conn, since=since, until=until, hosts=["mx-b"])
        doc_a = build_report(conn, since=since, until=until, hosts=["mx-a"])
    assert sorted(e["host"] for e in fleet_doc["egress"]) == ["mx-a", "mx-b"]
    assert [e["host"] for e in doc_b["egress"]] == ["mx-b"] and doc_b["breaker"] == []
    assert [(x["host"], x["provider"], x["new"]) for x in doc_a["breaker"]] == [
        ("mx-a", "swisscom", "open")
    ]


def test_cli_status_is_the_fleet_close_acts_on_this_host(
    fleet: dict[str, Host],
    url: str,
    tmp_path: Path,
    etc: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = fleet["mx-a"]
    a.engine.observe(deliveries(SWISS_BLOCK)[0])
    cfg = tmp_path / "mw.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state-b"}"\n[store]\nurl = "{url}"\n[log]\nhost = "mx-b"\n'
        f'[breaker]\npostfix_config = "{tmp_path / "no-postfix"}"\n'
    )
    monkeypatch.setenv("MAILWARDEN_CONFIG", str(cfg))
    cli._register()
    run = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        r = run.invoke(cli.app, list(args))
        if r.exception and not isinstance(r.exception, SystemExit):
            raise r.exception
        return r.exit_code, r.stdout, r.stderr

    code, out, _ = invoke("breaker", "open", "gmx", "--reason", "testing", "--for", "1h")
    assert code == 0 and "on mx-b" in out
    code, out, _ = invoke("breaker", "status", "--json", "--no-queue")
    assert code == 1
    doc = json.loads(out)
    assert doc["host"] == "mx-b"
    assert {(r["host"], r["provider"], r["state"]) for r in doc["providers"]} == {
        ("mx-a", "swisscom", "open"),
        ("mx-b", "gmx", "open"),
    }
    code, out, _ = invoke("breaker", "status", "--json", "--no-queue", "--host", "mx-a")
    assert [r["provider"] for r in json.loads(out)["providers"]] == ["swisscom"]
    code, out, _ = invoke("breaker", "status", "--no-queue")
    assert "mx-a" in out and "mx-b" in out  # the table names the hosts
    # closing Swisscom here (mx-b) changes nothing on mx-a, and says where it is open
    code, out, err = invoke("breaker", "close", "swisscom", "--no-release")
    assert code == 0 and "already closed on mx-b" in out and "not closed on mx-a" in err
    assert a.make().machine.get("swisscom").state == "open"
    code, out, _ = invoke("breaker", "history", "--json", "--host", "mx-b")
    assert [(t["host"], t["provider"]) for t in json.loads(out)["transitions"]] == [("mx-b", "gmx")]
    with pytest.raises(ConfigError, match="bad host name"):
        invoke("breaker", "open", "gmx", "--reason", "x", "--host", "bad host!")


def test_dashboard_lists_the_fleet_and_steers_only_its_own_host(
    fleet: dict[str, Host], url: str, tmp_path: Path
) -> None:
    a, b = fleet["mx-a"], fleet["mx-b"]
    a.engine.observe(deliveries(SWISS_BLOCK)[0])
    b.engine.open("gmx", duration=3600, note="by hand on b")
    settings = Settings.model_validate(
        {"state_dir": str(tmp_path / "st"), "store": {"url": url}, "web": {"token": TOKEN}}
    )
    app = create_app(
        settings, engine=b.db, control=EngineControl(b.engine, host="mx-b"), health=lambda f: []
    )
    c = TestClient(app)
    assert login(c).status_code == 303
    page = c.get("/?days=7", headers=HTML).text
    rows = dict(re.findall(r'data-provider="([^"]+)" data-host="([^"]+)"', page))
    assert rows == {"swisscom": "mx-a", "gmx": "mx-b"}
    assert 'id="close-gmx"' in page  # mx-b's own breaker: a button
    assert 'id="close-swisscom"' not in page  # mx-a's: shown, not steerable from mx-b
    assert "<th>host</th>" in page
    # the host selector offers both (mx-a and mx-b have breakers, no mail records)
    assert {"mx-a", "mx-b"} <= set(re.findall(r'<option value="([^"]+)"', page))
    only_a = c.get("/?days=7&host=mx-a", headers=HTML).text
    assert re.findall(r'data-provider="([^"]+)" data-host', only_a) == ["swisscom"]
    assert 'id="open-any"' not in only_a  # no "park a provider" form for another host
    # egress page: the host selector applies
    for h in (a, b):
        Recorder(h.db, host=h.name).record([_egress(time.time() - 5)])
    eg = c.get("/egress?days=1", headers=HTML).text
    assert set(re.findall(r'<tr class="blocked" data-host="([^"]+)"', eg)) == set(HOSTS)
    eg_b = c.get("/egress?days=1&host=mx-b", headers=HTML).text
    assert set(re.findall(r'data-host="([^"]+)"', eg_b)) == {"mx-b"}


# ------------------------------------------------------------------ stores from before the key


def _old_schema(db: Any) -> None:
    """The first version's tables: the same columns without ``host`` (and the key without
    it), under the database's own constraint names."""
    md = MetaData()
    for t in (
        breaker_state,
        breaker_transitions,
        breaker_hits,
        egress_events,
        egress_summary,
        egress_alerts,
    ):
        Table(
            t.name,
            md,
            *[
                Column(
                    c.name,
                    c.type,
                    primary_key=c.primary_key,
                    nullable=c.nullable,
                    unique=c.unique,
                    server_default=c.server_default.arg if c.server_default is not None else None,  # type: ignore[attr-defined]
                )
                for c in t.columns
                if c.name != "host"
            ],
        )
    with db.begin() as conn:
        md.create_all(conn)
        conn.execute(
            insert(md.tables["breaker_state"]).values(
                provider="swisscom", ip="", state="open", since=100.0, until=None, level=1,
                rule="swisscom/not-allowed", trips=1, updated=100.0, actor="rule",
            )
        )  # fmt: skip
        conn.execute(
            insert(md.tables["breaker_state"]).values(
                provider="gmx", ip="", state="open", since=90.0, until=None, level=1,
                trips=1, updated=90.0, actor="person",
            )
        )  # fmt: skip
        conn.execute(
            insert(md.tables["breaker_transitions"]).values(
                ts=100.0, provider="swisscom", ip="", old="closed", new="open", actor="rule"
            )
        )
        conn.execute(
            insert(md.tables["breaker_hits"]).values(
                ts=99.0, provider="orange", ip="", rule="default/ratelimited-ours"
            )
        )
        conn.execute(
            insert(md.tables["egress_summary"]).values(
                key="legacy", uid=33, user="www-data", exe="/usr/bin/php8.2", unit="",
                script="/var/www/shop/mail.php", port=25, provider="", allowed=False, mta=False,
                count=5, first_seen=1.0, last_seen=2.0, destinations=1,
            )
        )  # fmt: skip


def test_a_store_from_before_the_host_key_is_upgraded_and_claimed(url: str) -> None:
    raw = open_engine(url, create=False)
    _old_schema(raw)
    raw.dispose()
    db = open_engine(url)  # upgrades
    insp = inspect(db)
    for t in ("breaker_state", "breaker_transitions", "breaker_hits", "egress_summary"):
        assert "host" in {c["name"] for c in insp.get_columns(t)}, t
    assert insp.get_pk_constraint("breaker_state")["constrained_columns"] == [
        "host",
        "provider",
        "ip",
    ]
    open_engine(url).dispose()  # opening again is a no-op
    # the first host to load claims the old rows: its Swisscom breaker is still open; a row
    # it already wrote itself (gmx, closed since) wins over the old one
    store = BreakerStore(db, "mx-a")
    gmx = {"provider": "gmx", "ip": "", "state": "closed", "since": 150.0, "until": None}
    store.save([{**dict.fromkeys(STATE_FIELDS, 0), **gmx, "reply": "", "rule": "", "issuer": "",
                 "url": "", "reason": "", "slow_transport": "", "actor": "person", "note": "",
                 "closed_at": 150.0}], [], 150.0)  # fmt: skip
    assert store.claim_unkeyed() == 3  # swisscom's state, the transition, the hit
    states = {r["provider"]: r for r in store.load_states()}
    assert states["gmx"]["state"] == "closed"
    st = states["swisscom"]
    assert (st["state"], st["rule"]) == ("open", "swisscom/not-allowed")
    assert [h["new"] for h in store.history()] == ["open"]
    assert len(store.hits_since(0)) == 1
    assert BreakerStore(db, "mx-b").claim_unkeyed() == 0  # nothing left to claim
    assert BreakerStore(db, "mx-b").load_states() == []
    # a second host may now keep its own Swisscom breaker beside mx-a's
    BreakerStore(db, "mx-b").save([{**st, "state": "closed"}], [], 200.0)
    assert {(r["host"], r["provider"], r["state"]) for r in fleet_states(db)} == {
        ("mx-a", "swisscom", "open"),
        ("mx-a", "gmx", "closed"),
        ("mx-b", "swisscom", "closed"),
    }
    # egress: the old summary row is re-keyed for its new host, so later events join it
    rec = Recorder(db, host="mx-a")
    rec.record([_egress(time.time(), verdict="blocked")])
    [row] = top(db)
    assert (row["host"], row["count"]) == ("mx-a", 6)
    with db.connect() as c:
        key = c.execute(select(egress_summary.c.key)).scalar_one()
    assert key == summary_key(
        "mx-a", 33, "/usr/bin/php8.2", "", "/var/www/shop/mail.php", 25, "", False
    )
    db.dispose()
