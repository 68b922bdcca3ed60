"""Detectors on a real store: per-origin spikes (robust baseline from the daily rollups),
SASL failure bursts, and blocklist listing changes against a real DNS server."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from alerts.logwriter import LogWriter
from fixtures.dns import DnsServer
from mailwarden.config import AlertSettings, Settings
from mailwarden.pipeline import analyze
from mailwarden.report.alerts import Alert, Dispatcher
from mailwarden.report.spikes import detect_spikes, robust, sasl_alert, sasl_bursts, spike_alert
from mailwarden.service.jobs import JobContext, dnsbl_check
from mailwarden.store.db import open_engine, write_transaction
from mailwarden.store.service import insert_sasl

DAY = 86400


class Sink:
    """An alert channel that keeps what it was given (the test's receiver)."""

    name = "sink"

    def __init__(self) -> None:
        self.got: list[Alert] = []

    def send(self, a: Alert) -> None:
        self.got.append(a)


def _store(tmp: Path, w: LogWriter) -> str:
    log = tmp / "mail.log"
    w.write(log)
    url = f"sqlite:///{tmp / 's.db'}"
    analyze([log], db_url=url)
    return url


def test_spike_of_a_leaked_account_against_its_own_baseline(tmp_path: Path) -> None:
    rnd = random.Random(5)
    now = time.time()
    w = LogWriter()
    usual = [f"reader{i}@partner{i % 4}.example" for i in range(60)]
    for d in range(14, 0, -1):  # two weeks of ordinary days
        base = now - (d + 1) * DAY + 3600  # never inside the last 24 h
        for i in range(rnd.randint(18, 24)):  # alice: ~20 recipients a day, 4 providers
            w.message(base + i * 60, "sasl:alice@example.test", [usual[rnd.randrange(60)]])
        for i in range(rnd.randint(55, 65)):  # the shop (uid 33): ~60 a day
            w.message(base + 2000 + i * 30, "uid:33", [usual[rnd.randrange(60)]])
    # today: alice's password leaked; 240 recipients at 120 different providers
    for i in range(120):
        w.message(
            now - 3000 + i * 10,
            "sasl:alice@example.test",
            [f"x{i}@victim{i}.example", f"y{i}@victim{i}.example"],
        )
    for i in range(62):
        w.message(now - 5000 + i * 30, "uid:33", [usual[rnd.randrange(60)]])
    url = _store(tmp_path, w)
    cfg = AlertSettings()
    spikes, skipped = detect_spikes(open_engine(url), cfg, now=now)
    assert skipped == []
    got = {(s.kind, s.ident, s.metric): s for s in spikes}
    assert set(got) == {
        ("sasl", "alice@example.test", "volume"),
        ("sasl", "alice@example.test", "providers"),
    }
    v = got[("sasl", "alice@example.test", "volume")]
    assert v.current == 240 and 18 <= v.median <= 24 and v.threshold < 240
    p = got[("sasl", "alice@example.test", "providers")]
    assert p.current == 120 and p.median <= 4
    a = spike_alert(v, now=now)
    assert a.kind == "spike" and "SASL user alice@example.test" in a.title
    assert a.key.endswith(time.strftime("%Y-%m-%d", time.gmtime(now)))


def test_quiet_server_and_short_history_are_not_noisy(tmp_path: Path) -> None:
    now = time.time()
    w = LogWriter()
    # a brand-new server: one day of history only; a burst that would look like a spike
    for i in range(10):
        w.message(now - 2 * DAY + i * 60, "uid:1000", ["a@one.example"])
    for i in range(200):
        w.message(now - 3000 + i * 5, "uid:1000", [f"a{i}@many{i}.example"])
    url = _store(tmp_path, w)
    spikes, skipped = detect_spikes(open_engine(url), AlertSettings(), now=now)
    assert spikes == [] and skipped == ["mail"]
    # with history, a small absolute number is never a spike (min volume)
    w2 = LogWriter()
    for d in range(10, 0, -1):
        w2.message(now - d * DAY, "uid:1000", ["a@one.example"])
    for i in range(30):
        w2.message(now - 3000 + i * 5, "uid:1000", ["a@one.example"])
    (tmp_path / "b").mkdir()
    url2 = _store(tmp_path / "b", w2)
    spikes2, _ = detect_spikes(open_engine(url2), AlertSettings(), now=now)
    assert spikes2 == []
    big = detect_spikes(open_engine(url2), AlertSettings(spike_min_volume=20), now=now)[0]
    assert [(s.ident, s.metric) for s in big] == [("1000", "volume")]


def test_robust_statistics() -> None:
    assert robust([10, 10, 10, 10, 1000]) == (10.0, 0.0)  # one odd day does not move it
    med, mad = robust([8, 10, 12, 10, 9, 11])
    assert med == 10 and 1.4 < mad < 1.6


def test_sasl_bursts_per_client_and_in_total(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    e = open_engine(url)
    now = time.time()
    rows: list[tuple[Any, ...]] = []
    for i in range(25):  # one guesser
        rows.append(
            (
                "mail",
                now - 100 + i,
                f"k{i}",
                "unknown",
                "203.0.113.77",
                "LOGIN",
                f"user{i % 3}@example.test",
                "authentication failure",
            )
        )
    for i in range(5):  # a user with a typo
        rows.append(
            (
                "mail",
                now - 50 + i,
                f"t{i}",
                "laptop",
                "198.51.100.7",
                "PLAIN",
                "bob@example.test",
                "",
            )
        )
    for i in range(30):  # an old burst, outside the window
        rows.append(("mail", now - 5000 + i, f"o{i}", "x", "192.0.2.66", "LOGIN", "", ""))
    with write_transaction(e) as c:
        assert insert_sasl(c, rows) == 60
        assert insert_sasl(c, rows) == 0  # the same lines again add nothing
    cfg = AlertSettings(sasl_burst=20, sasl_window=600, sasl_total_burst=28)
    bursts = sasl_bursts(e, cfg, now=now)
    got = {(b.client, b.count) for b in bursts}
    assert got == {("203.0.113.77", 25), ("", 30)}
    guess = next(b for b in bursts if b.client)
    assert set(guess.users) == {"user0@example.test", "user1@example.test", "user2@example.test"}
    a = sasl_alert(guess, window=600)
    assert a.key == "sasl:mail:203.0.113.77" and "203.0.113.77" in a.title
    assert sasl_bursts(e, cfg, hosts=["other"], now=now) == []


def test_blocklist_listing_and_delisting_raise_one_alert_each(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = open_engine(url)
    settings = Settings.model_validate(
        {
            "dns": {"nameservers": [dns_server.address], "timeout": 2},
            "identity": {
                "ips": ["192.0.2.44"],
                "names": ["mx.example.test"],
                "helo_names": ["mx.example.test"],
                "domains": ["example.test"],
            },
        }
    )
    sink = Sink()
    d = Dispatcher([sink], engine=engine, host="mx1", min_severity="info")
    ctx = JobContext(settings, engine, "mx1", d)
    r1 = dnsbl_check(ctx, time.time())
    assert r1["changes"] == 0 and r1["checked"] > 5
    dns_server.add("44.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.reload()
    r2 = dnsbl_check(ctx, time.time())
    assert r2["changes"] == 1 and r2["listed"] == 1
    r3 = dnsbl_check(ctx, time.time())  # still listed: nothing new
    assert r3["changes"] == 0
    dns_server.remove("44.2.0.192.zen.spamhaus.org")
    dns_server.reload()
    r4 = dnsbl_check(ctx, time.time())
    assert r4["changes"] == 1 and r4["listed"] == 0
    assert d.wait_idle(10)
    titles = [(a.severity, a.title) for a in sink.got]
    assert titles == [
        ("critical", "192.0.2.44 listed on Spamhaus ZEN (SBL, CSS, XBL, PBL)"),
        ("info", "192.0.2.44 delisted from Spamhaus ZEN (SBL, CSS, XBL, PBL)"),
    ], titles
    listed = sink.got[0]
    assert listed.data["answers"] == ["127.0.0.2"] and "SBL" in listed.data["meaning"]
    assert listed.links and listed.links[0][1].startswith("https://")
