"""Dashboard queries and charts: periods, spikes, the extra index, SVG output."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import pytest
from sqlalchemy import text

from mailwarden.store.db import open_engine
from mailwarden.store.queries import rejection_counts_query
from mailwarden.web import charts
from mailwarden.web import queries as wq

from .conftest import Imported

DAY = 86400.0


def test_period_ends_now_or_at_the_newest_record(store: Imported) -> None:
    engine = open_engine(store.url)
    with engine.connect() as c:
        newest = wq.newest_ts(c)
        assert newest is not None
        p = wq.period(c, 7, newest + 3600)  # data within the window: ends today
        assert not p.anchored and p.since <= newest < p.until
        assert p.until - p.since == 7 * DAY and len(p.day_list()) == 7
        later = wq.period(c, 7, newest + 30 * DAY)  # an old archive: ends at its newest day
        assert later.anchored and later.since <= newest < later.until
    engine.dispose()


def origin(hourly: dict[int, int], **counts: int) -> wq.OriginRow:
    r = wq.OriginRow(1, "uid", "33", "www-data", counts=Counter(counts))
    r.hourly = hourly
    return r


@pytest.mark.parametrize(
    ("hourly", "spike"),
    [
        ({0: 5, 3600: 6, 7200: 4, 10800: 60}, True),  # 60 against a typical 5.5
        ({0: 50, 3600: 60, 7200: 55}, False),  # busy but steady
        ({0: 1, 3600: 2, 7200: 15}, False),  # a jump, but under 20 messages
        ({7200: 25}, True),  # out of silence
        ({}, False),
    ],
)
def test_spike(hourly: dict[int, int], spike: bool) -> None:
    assert origin(hourly).spike is spike


def test_origin_figures() -> None:
    r = origin({0: 3, 3600: 9}, sent=6, bounced=3, deferred=10, expired=1)
    assert r.peak == (3600, 9) and r.typical == 6
    assert r.bounce_ratio == pytest.approx(4 / 10)  # deferred are not done yet
    assert r.label == "uid 33 (www-data)"


def test_rejected_attempts_use_the_dashboards_index(store: Imported) -> None:
    engine = open_engine(store.url)
    wq.ensure_indexes(engine)
    wq.ensure_indexes(engine)  # idempotent
    with engine.connect() as c:
        p = wq.period(c, 7, wq.newest_ts(c) or 0)
        from sqlalchemy.dialects import sqlite

        a = c.execute(text("SELECT count(*) FROM attempts WHERE rejection_id IS NOT NULL"))
        assert a.scalar_one() > 0
        kinds = wq.rejection_kinds(c, p, "")
        q = rejection_counts_query(since=p.since, until=p.until, limit=500)
        sql = str(q.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        plan = " ".join(str(r) for r in c.execute(text("EXPLAIN QUERY PLAN " + sql)))
    engine.dispose()
    assert "ix_attempts_ts_rejection_id" in plan
    assert sum(k.count for k in kinds) == a_count(store)


def a_count(store: Imported) -> int:
    """Rejected (non-internal) attempts, counted from the analyze reports."""
    return sum(k["count"] for d in store.documents for p in d["providers"] for k in p["rejections"])


def test_stacked_bars() -> None:
    d0 = dt.date(2026, 11, 20)
    days = [(d0 + dt.timedelta(days=i), Counter(sent=10 * i, bounced=i)) for i in range(5)]
    svg = str(charts.stacked_bars(days))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    groups = re.findall(r'<g class="day" data-day="([\d-]+)"><title>([^<]*)</title>', svg)
    assert [g[0] for g in groups] == [d.isoformat() for d, _ in days]
    assert groups[4][1] == "2026-11-24: sent 40, bounced 4"
    assert groups[0][1] == "2026-11-20: nothing"
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    # the y axis tops at a round number at or above the largest day (44 -> 50)
    assert max(int(v) for v in re.findall(r'text-anchor="end">(\d+)<', svg)) == 50


def test_chart_escapes_labels() -> None:
    svg = str(charts.stacked_bars([], label='<img src=x onerror="alert(1)">'))
    assert "<img" not in svg and "&lt;img" in svg
