"""Charts of the dashboard as inline SVG made on the server: no chart library, no JavaScript,
nothing fetched from anywhere. Colours come from CSS classes (``s-sent``, ``s-deferred`` ...)
in ``static/style.css``; every bar carries a ``<title>`` (the browser's tooltip).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

SERIES = ("sent", "deferred", "bounced", "expired", "other")


def _nice_max(v: int) -> int:
    """The smallest 1/2/5 x 10^k not below ``v`` (at least 1)."""
    if v <= 1:
        return 1
    k = 1
    while True:
        for m in (1, 2, 5):
            if m * k >= v:
                return m * k
        k *= 10


def _stack(
    c: Counter[str], x: float, bottom: float, bar: float, ymax: int, h: float, tip: str = ""
) -> list[str]:
    """One bar of the :data:`SERIES` stacked bottom up, ``h`` high at ``ymax``; with ``tip``
    each segment has its own tooltip (``"<tip>: <status> <count>"``)."""
    out = []
    y = bottom
    for s in SERIES:
        if not c[s]:
            continue
        bh = c[s] / ymax * h
        y -= bh
        out.append(
            f'<rect class="s-{s}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
            f'height="{max(bh, 0.5):.1f}"'
            + (f"><title>{tip}: {s} {c[s]}</title></rect>" if tip else "/>")
        )
    return out


def stacked_bars(
    days: Sequence[tuple[dt.date, Counter[str]]],
    *,
    width: int = 900,
    height: int = 220,
    label: str = "delivery attempts per day",
) -> Markup:
    """Stacked bars of attempts per status per day, with a y axis and day labels."""
    left, bottom, top, right = 48, 28, 10, 8
    w, h = width - left - right, height - top - bottom
    ymax = _nice_max(max((sum(c[s] for s in SERIES) for _, c in days), default=0))
    n = max(len(days), 1)
    slot = w / n
    bar = max(1.0, min(40.0, slot * 0.7))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + h - frac * h
        parts.append(f'<line class="grid" x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{int(ymax * frac)}</text>"
        )
    every = max(1, n // 10)
    for i, (day, c) in enumerate(days):
        x = left + i * slot + (slot - bar) / 2
        tip = ", ".join(f"{s} {c[s]}" for s in SERIES if c[s]) or "nothing"
        parts.append(f'<g class="day" data-day="{day.isoformat()}"><title>{day}: {tip}</title>')
        parts += _stack(c, x, float(top + h), bar, ymax, h)
        parts.append("</g>")
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{x + bar / 2:.1f}" y="{height - 8}" '
                f'text-anchor="middle">{day.strftime("%m-%d")}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(
    days: Sequence[dt.date],
    daily: dict[dt.date, Counter[str]],
    *,
    width: int = 120,
    height: int = 24,
) -> Markup:
    """Tiny stacked bars (sent below, failures above) for a table cell."""
    totals = [sum(daily.get(d, Counter()).values()) for d in days]
    ymax = max(totals, default=0) or 1
    n = max(len(days), 1)
    slot = width / n
    bar = max(1.0, slot * 0.8)
    parts = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, d in enumerate(days):
        parts += _stack(daily.get(d, Counter()), i * slot, float(height), bar, ymax, height, str(d))
    parts.append("</svg>")
    return Markup("".join(parts))


def hour_bars(hourly: dict[int, int], since: float, until: float, *, width: int = 160) -> Markup:
    """Messages per hour over ``[since, until)`` as a sparkline (an origin's spikes)."""
    start = int(since // 3600) * 3600
    hours = list(range(start, int(until), 3600))
    if len(hours) > 24 * 14:  # long windows: one bar per 6 hours
        step = 6 * 3600
        buckets: Counter[int] = Counter()
        for h, v in hourly.items():
            buckets[start + (h - start) // step * step] += v
        hours, hourly = list(range(start, int(until), step)), dict(buckets)
    height = 24
    ymax = max(hourly.values(), default=0) or 1
    slot = width / max(len(hours), 1)
    parts = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, h in enumerate(hours):
        v = hourly.get(h, 0)
        if not v:
            continue
        bh = max(v / ymax * height, 0.5)
        when = dt.datetime.fromtimestamp(h, dt.UTC).strftime("%Y-%m-%d %H:00")
        parts.append(
            f'<rect class="s-sent" x="{i * slot:.1f}" y="{height - bh:.1f}" '
            f'width="{max(slot * 0.9, 0.6):.1f}" height="{bh:.1f}">'
            f"<title>{when} UTC: {v} messages</title></rect>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
