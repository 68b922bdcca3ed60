"""Prometheus metrics over the store, scraped and read back with the real Prometheus text
parser (``prometheus_client.parser``), compared with what the store and the logs say."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from mailwarden.events import EgressConnect
from mailwarden.report.metrics import StoreCollector, registry
from mailwarden.store import schema
from mailwarden.store.db import open_engine
from mailwarden.web.services import Parked

from .conftest import TOKEN, Dashboard, Imported, breaker_engine

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape_text(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by sample name, and the type of every family."""
    out: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out, types


def scrape(url: str, **kw: Any) -> tuple[Samples, dict[str, str]]:
    engine = open_engine(url)
    try:
        return scrape_text(generate_latest(registry(engine, process=False, **kw)).decode())
    finally:
        engine.dispose()


def by(samples: Samples, name: str, *labels: str) -> Counter[tuple[str, ...]]:
    c: Counter[tuple[str, ...]] = Counter()
    for lab, v in samples.get(name, []):
        c[tuple(lab[k] for k in labels)] += v
    return c


def test_deliveries_equal_the_stored_attempts(any_store: Imported) -> None:
    """The counter comes from the rollups; the attempts table is counted independently."""
    s, types = scrape(any_store.url)
    assert types["mailwarden_deliveries"] == "counter"
    got = by(s, "mailwarden_deliveries_total", "host", "provider", "status")
    a, m = schema.attempts, schema.messages
    engine = open_engine(any_store.url)
    with engine.connect() as c:
        rows = c.execute(
            select(m.c.host, a.c.provider, a.c.status, func.count())
            .join(m, m.c.id == a.c.message_pk)
            .group_by(m.c.host, a.c.provider, a.c.status)
        ).all()
    engine.dispose()
    want = Counter({(h, p or "unknown", st): float(n) for h, p, st, n in rows})
    assert got == want
    assert {k[0] for k in got} == {"mail", "mx2"}


def test_rejections_equal_the_analyze_reports(any_store: Imported) -> None:
    s, _ = scrape(any_store.url)
    got = by(s, "mailwarden_rejections_total", "provider", "reason", "issuer")
    want: Counter[tuple[str, ...]] = Counter()
    for doc in any_store.documents:
        for p in doc["providers"]:
            for k in p["rejections"]:
                want[(p["provider"], k["reason"], k["issuer"])] += k["count"]
    assert got == want
    assert any(k[2] == "spamhaus" for k in got)  # the issuer label is filled


def test_log_lines_and_lag(any_store: Imported) -> None:
    engine = open_engine(any_store.url)
    m, a = schema.messages, schema.attempts
    with engine.connect() as c:  # the naive full scans the collector avoids
        newest = {
            h: max(float(t1), float(t2))
            for h, t1, t2 in c.execute(
                select(m.c.host, func.max(m.c.arrival), func.max(a.c.ts))
                .join(a, a.c.message_pk == m.c.id, isouter=True)
                .group_by(m.c.host)
            )
        }
    reg_now = max(newest.values()) + 123.5
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(engine, clock=lambda: reg_now))
    s, types = scrape_text(generate_latest(reg).decode())
    engine.dispose()
    got = by(s, "mailwarden_log_newest_line_timestamp_seconds", "host")
    assert {k[0]: v for k, v in got.items()} == pytest.approx(newest)
    lag = {k[0]: v for k, v in by(s, "mailwarden_log_lag_seconds", "host").items()}
    assert lag == pytest.approx({h: reg_now - t for h, t in newest.items()})
    lines = {k[0]: v for k, v in by(s, "mailwarden_log_lines_total", "result").items()}
    assert lines["unparsed"] == any_store.unparsed == 3
    assert lines["parsed"] == sum(d["lines"]["parsed"] for d in any_store.documents)
    assert types["mailwarden_log_lines"] == "counter"


def test_breaker_state_and_transitions(store: Imported, tmp_path: Path) -> None:
    eng = breaker_engine(store.url, tmp_path / "view.json")
    eng.open("google", duration=3600, note="test")
    eng.open("yahoo", duration=None, note="test")
    eng.close("yahoo", note="done")
    s, types = scrape(store.url)
    st = by(s, "mailwarden_breaker_state", "provider", "state")
    assert st[("google", "open")] == 1 and st[("google", "closed")] == 0
    assert st[("yahoo", "closed")] == 1 and st[("yahoo", "open")] == 0
    assert sum(v for (p, _), v in st.items() if p == "google") == 1  # exactly one current state
    until = by(s, "mailwarden_breaker_until_timestamp_seconds", "provider")
    since = by(s, "mailwarden_breaker_since_timestamp_seconds", "provider")
    assert until[("google",)] - since[("google",)] == pytest.approx(3600)
    assert ("yahoo",) not in until  # no timer: no sample
    tr = by(s, "mailwarden_breaker_transitions_total", "provider", "from", "to")
    assert tr == Counter(
        {
            ("google", "closed", "open"): 1,
            ("yahoo", "closed", "open"): 1,
            ("yahoo", "open", "closed"): 1,
        }
    )
    assert types["mailwarden_breaker_transitions"] == "counter"
    eng.store.engine.dispose()


def test_egress_connections_by_user_and_verdict(store: Imported) -> None:
    from mailwarden.egress.summary import Recorder, alerts

    engine = open_engine(store.url)
    t = 1_790_000_000.0

    def ev(
        i: int, user: str, uid: int, verdict: str, mta: bool = False, port: int = 25
    ) -> EgressConnect:
        return EgressConnect(
            ts=t + i, source="ebpf", daddr=f"198.51.100.{i % 7 + 1}", dport=port, uid=uid,
            user=user, exe="/usr/bin/php8.2" if not mta else "/usr/lib/postfix/sbin/smtp",
            verdict=verdict, mta=mta, pid=1000 + i,
        )  # fmt: skip

    events = (
        [ev(i, "www-data", 33, "blocked") for i in range(3)]
        + [ev(i, "alice", 1001, "allowed", port=587) for i in range(2)]
        + [ev(i, "postfix", 104, "allowed", mta=True) for i in range(5)]
        + [ev(9, "", 4242, "")]
    )
    Recorder(engine).record(events)
    s, _ = scrape(store.url)
    got = by(s, "mailwarden_egress_connections_total", "user", "verdict", "port", "mta")
    assert got == Counter(
        {
            ("www-data", "blocked", "25", "false"): 3,
            ("alice", "allowed", "587", "false"): 2,
            ("postfix", "allowed", "25", "true"): 5,
            ("uid:4242", "allowed", "25", "false"): 1,
        }
    )
    al = by(s, "mailwarden_egress_alerts_total", "user")
    stored = Counter((a["user"] or f"uid:{a['uid']}") for a in alerts(engine, limit=1000))
    assert {k[0]: v for k, v in al.items()} == dict(stored)
    engine.dispose()


def test_parked_recipients_and_an_unreadable_queue(store: Imported) -> None:
    s, _ = scrape(store.url, parked=lambda: {"google": Parked(4, 1), "gmx": Parked(2, 0)})
    assert by(s, "mailwarden_parked_recipients", "provider") == Counter(
        {("google",): 4, ("gmx",): 2}
    )
    assert by(s, "mailwarden_held_recipients", "provider")[("google",)] == 1
    assert s["mailwarden_queue_up"][0][1] == 1

    def broken() -> dict[str, Parked]:
        raise RuntimeError("postqueue: fatal: No such file or directory")

    s, _ = scrape(store.url, parked=broken)
    assert s["mailwarden_queue_up"][0][1] == 0
    assert "mailwarden_parked_recipients" not in s
    assert s["mailwarden_store_up"][0][1] == 1


def test_unreadable_store_is_a_metric_not_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = open_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("DROP TABLE daily_rollups")
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(engine))
    s, _ = scrape_text(generate_latest(reg).decode())
    engine.dispose()
    assert s["mailwarden_store_up"][0][1] == 0
    assert "mailwarden_deliveries_total" not in s


def test_names_follow_the_conventions(store: Imported) -> None:
    engine = open_engine(store.url)
    text = generate_latest(registry(engine, parked=lambda: {"google": Parked(1, 0)})).decode()
    engine.dispose()
    s, _ = scrape_text(text)
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("mailwarden_"), fam.name
        for sample in fam.samples:
            if fam.type == "counter":
                assert sample.name in (f"{fam.name}_total", f"{fam.name}_created"), sample.name
            else:
                assert not sample.name.endswith("_total"), sample.name
    for name in s:
        if "timestamp" in name or "lag" in name or "duration" in name:
            assert name.endswith("_seconds"), name
    for values in s.values():
        assert all(math.isfinite(v) and v >= 0 for _, v in values)


def test_metrics_endpoint_auth(dashboard: Dashboard) -> None:
    c = TestClient(dashboard.app)
    r = c.get("/metrics")
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    assert c.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
    r = c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    s, _ = scrape_text(r.text)
    assert s["mailwarden_store_up"][0][1] == 1
    assert "mailwarden_process_cpu_seconds_total" in s  # the process's own metrics too


def test_metrics_public_when_configured(store: Imported, tmp_path: Path) -> None:
    from mailwarden.config import Settings
    from mailwarden.web.app import create_app

    s = Settings.model_validate(
        {
            "state_dir": str(tmp_path),
            "store": {"url": store.url},
            "web": {"token": TOKEN, "metrics_public": True},
        }
    )
    c = TestClient(create_app(s, health=lambda full: []))
    assert c.get("/metrics").status_code == 200
    assert c.get("/", headers={"accept": "text/html"}).status_code == 401  # pages are not
