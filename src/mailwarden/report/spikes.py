"""Anomalies per origin: a spike in volume or provider spread, and SASL failure bursts.

**Spikes** (leaked credentials, a hacked web application): for each origin (SASL user, local
uid, client IP) of a host, the delivery attempts of the last 24 hours are compared with its
daily history in the rollups (``daily_rollups``, kept for years) over the previous
``[alerts] spike_baseline_days`` days, a missing day counting as zero. Robust statistics: the
median day and the median absolute deviation (MAD, scaled by 1.4826 to match a standard
deviation). An origin spikes when its last 24 h reach all of

* ``[alerts] spike_min_volume`` attempts (a quiet server is never noisy),
* ``spike_factor`` times its median day, and
* its median plus ``spike_mad`` robust deviations;

and the same for the number of distinct providers it sent to (from ``spike_min_providers``
providers): a script mailing a harvested list reaches far more providers than a newsletter
tool's usual audience. Hosts with fewer than three days of history are not judged (the report
says so).

**SASL bursts**: failures stored from the log (``sasl_failures``) within ``[alerts]
sasl_window`` seconds: ``sasl_burst`` from one client, or ``sasl_total_burst`` from all.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, distinct, func, select

from mailwarden.store import schema
from mailwarden.store.ingest import day_of

if TYPE_CHECKING:
    from mailwarden.config import AlertSettings
    from mailwarden.report.alerts import Alert

DAY = 86400.0
MIN_HISTORY_DAYS = 3
MAD_SCALE = 1.4826


@dataclass(frozen=True, slots=True)
class Spike:
    host: str
    kind: str  # origin kind: sasl, uid, client, unknown, bounce
    ident: str
    name: str
    metric: str  # "volume" (attempts) or "providers" (distinct providers)
    current: int
    median: float
    mad: float
    threshold: float
    providers: tuple[str, ...] = ()  # the providers of the last 24 h (most first), for people

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "origin": {"kind": self.kind, "id": self.ident, "name": self.name},
            "metric": self.metric,
            "current": self.current,
            "median": self.median,
            "mad": self.mad,
            "threshold": self.threshold,
            "providers": list(self.providers),
        }

    def who(self) -> str:
        if self.kind == "uid":
            return f"local user {self.name or self.ident} (uid {self.ident})"
        if self.kind == "sasl":
            return f"SASL user {self.ident}"
        if self.kind == "client":
            return f"client {self.ident}" + (f" ({self.name})" if self.name else "")
        return f"{self.kind} origin {self.ident or '-'}"


def robust(values: list[float]) -> tuple[float, float]:
    """(median, MAD scaled to a standard deviation) of ``values``."""
    if not values:
        return 0.0, 0.0
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values) * MAD_SCALE
    return float(med), float(mad)


def threshold(med: float, mad: float, *, floor: float, factor: float, k: float) -> float:
    return max(float(floor), factor * med, med + k * mad)


def history_days(conn: Connection, host: str, before: dt.date) -> int:
    r = schema.daily_rollups
    q = select(func.count(distinct(r.c.day))).where(r.c.host == host, r.c.day < before)
    return int(conn.execute(q).scalar() or 0)


def detect_spikes(
    bind: Engine | Connection,
    cfg: AlertSettings,
    *,
    hosts: Iterable[str] | None = None,
    now: float,
) -> tuple[list[Spike], list[str]]:
    """Spikes of the 24 h before ``now``; and the hosts skipped for lack of history."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return detect_spikes(conn, cfg, hosts=hosts, now=now)
    conn = bind
    a, m, o, r = schema.attempts, schema.messages, schema.origins, schema.daily_rollups
    since = now - DAY
    # the last 24 h, from the attempts themselves
    q = (
        select(m.c.host, o.c.kind, o.c.ident, o.c.name, o.c.id, a.c.provider, func.count())
        .select_from(a.join(m, a.c.message_pk == m.c.id).join(o, m.c.origin_id == o.c.id))
        .where(a.c.ts >= since, a.c.ts < now)
        .group_by(m.c.host, o.c.kind, o.c.ident, o.c.name, o.c.id, a.c.provider)
    )
    host_list = sorted(set(hosts)) if hosts is not None else None
    if host_list is not None:
        q = q.where(m.c.host.in_(host_list))
    cur: dict[tuple[str, int], dict[str, Any]] = {}
    for host, kind, ident, name, oid, prov, n in conn.execute(q):
        c = cur.setdefault(
            (host, oid), {"kind": kind, "ident": ident, "name": name, "n": 0, "prov": {}}
        )
        c["n"] += int(n)
        c["prov"][prov] = c["prov"].get(prov, 0) + int(n)
    if not cur:
        return [], []
    today = day_of(now)
    first = today - dt.timedelta(days=cfg.spike_baseline_days)
    skipped: list[str] = []
    judged_hosts = set()
    for host in sorted({h for h, _ in cur}):
        if history_days(conn, host, today) < MIN_HISTORY_DAYS:
            skipped.append(host)
        else:
            judged_hosts.add(host)
    if not judged_hosts:
        return [], skipped
    # history: per (host, origin, day) attempts and distinct providers
    oids = sorted({oid for h, oid in cur if h in judged_hosts})
    vol: dict[tuple[str, int], dict[dt.date, int]] = defaultdict(dict)
    spread: dict[tuple[str, int], dict[dt.date, int]] = defaultdict(dict)
    for i in range(0, len(oids), 500):
        part = oids[i : i + 500]
        hq = (
            select(
                r.c.host,
                r.c.origin_id,
                r.c.day,
                func.sum(r.c.count),
                func.count(distinct(r.c.provider)),
            )
            .where(
                r.c.day >= first,
                r.c.day < today,
                r.c.origin_id.in_(part),
                r.c.host.in_(sorted(judged_hosts)),
            )
            .group_by(r.c.host, r.c.origin_id, r.c.day)
        )
        for host, oid, day, n, np_ in conn.execute(hq):
            vol[(host, oid)][day] = int(n or 0)
            spread[(host, oid)][day] = int(np_ or 0)
    days = [first + dt.timedelta(days=i) for i in range(cfg.spike_baseline_days)]
    out: list[Spike] = []
    for (host, oid), c in sorted(cur.items(), key=lambda kv: (kv[0][0], -kv[1]["n"])):
        if host not in judged_hosts:
            continue
        provs = tuple(p for p, _ in sorted(c["prov"].items(), key=lambda kv: -kv[1]))
        for metric, current, series, floor in (
            ("volume", c["n"], vol, cfg.spike_min_volume),
            ("providers", len(c["prov"]), spread, cfg.spike_min_providers),
        ):
            med, mad = robust([float(series[(host, oid)].get(d, 0)) for d in days])
            thr = threshold(med, mad, floor=floor, factor=cfg.spike_factor, k=cfg.spike_mad)
            if current >= thr:
                out.append(
                    Spike(
                        host,
                        c["kind"],
                        c["ident"],
                        c["name"],
                        metric,
                        current,
                        med,
                        mad,
                        thr,
                        provs,
                    )
                )
    return out, skipped


def spike_alert(s: Spike, *, now: float, public_url: str = "") -> Alert:
    from mailwarden.report.alerts import Alert

    what = "delivery attempts" if s.metric == "volume" else "distinct providers"
    text = (
        f"{s.who()} on {s.host}: {s.current} {what} in the last 24 hours; its usual day is "
        f"{s.median:g} (robust deviation {s.mad:.1f}), the alert threshold {s.threshold:.0f}.\n"
        f"Providers reached: {', '.join(s.providers[:15])}"
        + (" ..." if len(s.providers) > 15 else "")
        + "\nA sudden rise like this is typical of leaked SMTP credentials or a hacked web "
        "application. Check the origin's recent mail (mailwarden trace, the queue)."
    )
    links = (("dashboard", f"{public_url.rstrip('/')}/origins"),) if public_url else ()
    return Alert(
        kind="spike",
        key=f"spike:{s.host}:{s.kind}:{s.ident}:{s.metric}:{day_of(now).isoformat()}",
        severity="critical" if s.current >= 3 * s.threshold else "warning",
        title=f"{s.who()}: {s.current} {what} in 24 h (usually {s.median:g})",
        text=text,
        host=s.host,
        data=s.as_dict(),
        links=links,
    )


@dataclass(frozen=True, slots=True)
class SaslBurst:
    host: str
    client: str  # IP (or name), "" for the all-clients total
    count: int
    users: tuple[str, ...]
    first: float
    last: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "client": self.client,
            "count": self.count,
            "users": list(self.users),
            "first": self.first,
            "last": self.last,
        }


def sasl_bursts(
    bind: Engine | Connection,
    cfg: AlertSettings,
    *,
    hosts: Iterable[str] | None = None,
    now: float,
) -> list[SaslBurst]:
    """Clients (and hosts, all clients together) over the SASL failure thresholds."""
    from mailwarden.store.service import sasl_failures as t

    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return sasl_bursts(conn, cfg, hosts=hosts, now=now)
    conn = bind
    since = now - cfg.sasl_window
    client = func.coalesce(func.nullif(t.c.client_ip, ""), t.c.client_name)
    q = (
        select(t.c.host, client, func.count(), func.min(t.c.ts), func.max(t.c.ts))
        .where(t.c.ts >= since, t.c.ts <= now)
        .group_by(t.c.host, client)
    )
    if hosts is not None:
        q = q.where(t.c.host.in_(sorted(set(hosts))))
    out: list[SaslBurst] = []
    totals: dict[str, list[Any]] = {}
    for host, cl, n, lo, hi in conn.execute(q):
        tot = totals.setdefault(host, [0, lo, hi])
        tot[0] += int(n)
        tot[1], tot[2] = min(tot[1], lo), max(tot[2], hi)
        if n >= cfg.sasl_burst:
            out.append(SaslBurst(host, str(cl), int(n), _users(conn, host, str(cl), since), lo, hi))
    for host, (n, lo, hi) in sorted(totals.items()):
        if n >= cfg.sasl_total_burst:
            out.append(SaslBurst(host, "", int(n), (), lo, hi))
    return out


def _users(conn: Connection, host: str, client: str, since: float) -> tuple[str, ...]:
    from mailwarden.store.service import sasl_failures as t

    q = (
        select(t.c.username, func.count())
        .where(
            t.c.host == host,
            t.c.ts >= since,
            (t.c.client_ip == client) | ((t.c.client_ip == "") & (t.c.client_name == client)),
            t.c.username != "",
        )
        .group_by(t.c.username)
        .order_by(func.count().desc())
        .limit(10)
    )
    return tuple(str(u) for u, _ in conn.execute(q))


def sasl_alert(b: SaslBurst, *, window: float) -> Alert:
    from mailwarden.report.alerts import Alert

    if b.client:
        title = f"{b.count} SASL authentication failures from {b.client} in {window / 60:g} min"
        text = (
            f"{b.client} failed SASL authentication {b.count} times on {b.host}"
            + (f" (users tried: {', '.join(b.users)})" if b.users else "")
            + ". Password guessing: block the client (fail2ban) and check those accounts."
        )
    else:
        title = f"{b.count} SASL authentication failures on {b.host} in {window / 60:g} min"
        text = (
            f"{b.count} SASL authentication failures from all clients on {b.host}: "
            "a distributed password-guessing run."
        )
    return Alert(
        kind="sasl",
        key=f"sasl:{b.host}:{b.client or '*'}",
        severity="warning",
        title=title,
        text=text,
        host=b.host,
        data=b.as_dict(),
    )
