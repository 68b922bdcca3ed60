"""Read-side queries of the dashboard that :mod:`mailwarden.store.queries` does not offer.

Every function takes an open ``Connection`` and returns plain data. Time series and per-provider
/ per-origin totals come from ``daily_rollups`` (small: one row per day, host, provider, origin,
status and reason), never from a scan of ``attempts``; detail (rejection kinds of a period, a
message, search) uses the indexed columns of ``attempts``/``messages`` (``ts``, ``recipient``,
``qid``, ``message_id``, ``arrival``).

``host`` is ``""`` for the fleet-wide view, else one syslog host name: every mail record carries
the host it was logged on.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, func, select, text

from mailwarden.store import schema
from mailwarden.store.ingest import day_of
from mailwarden.store.queries import (
    RejectionCount,
    StoredMessage,
    load_messages,
    message_id_matches,
    message_select,
    provider_rejections,
)

#: Statuses shown as columns, in this order; anything else is counted under "other".
STATUSES = ("sent", "deferred", "bounced", "expired")
DAY = 86400.0


def day_start(d: dt.date) -> float:
    """The first second of the UTC day ``d`` (as :func:`~mailwarden.store.ingest.day_of`)."""
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Period:
    """The window a page shows: ``[since, until)`` in POSIX seconds and as UTC days."""

    since: float
    until: float
    days: int
    anchored: bool  # True: the store's data ends before now, the window ends at its newest row

    @property
    def first_day(self) -> dt.date:
        return day_of(self.since)

    @property
    def last_day(self) -> dt.date:
        return day_of(self.until - 1)

    def day_list(self) -> list[dt.date]:
        d, out = self.first_day, []
        while d <= self.last_day:
            out.append(d)
            d += dt.timedelta(days=1)
        return out


def newest_ts(conn: Connection) -> float | None:
    """Time of the newest stored delivery attempt or arrival (both indexed: two index probes)."""
    a = conn.execute(select(func.max(schema.attempts.c.ts))).scalar()
    m = conn.execute(select(func.max(schema.messages.c.arrival))).scalar()
    vals = [float(v) for v in (a, m) if v is not None]
    return max(vals) if vals else None


def period(conn: Connection, days: int, now: float) -> Period:
    """The last ``days`` UTC days up to now, or up to the newest data when the store is older
    than that (an imported archive): a page always shows the data it has."""
    newest = newest_ts(conn)
    end = now
    anchored = False
    if newest is not None and newest < now - days * DAY:
        end, anchored = newest, True
    last = day_of(end)
    first = last - dt.timedelta(days=days - 1)
    return Period(day_start(first), day_start(last) + DAY, days, anchored)


#: An index the dashboard adds to the spine's ``attempts``: the rejected attempts of a time
#: window without touching the table (5x faster on 400,000 attempts; only non-success rows
#: are in it, so ingestion barely notices). Plain DDL, not declared on the shared metadata, so
#: importing this module changes no other table definition.
ATTEMPTS_TS_REJECTION = (
    "CREATE INDEX IF NOT EXISTS ix_attempts_ts_rejection_id ON attempts (ts, rejection_id) "
    "WHERE rejection_id IS NOT NULL"
)


def ensure_indexes(engine: Engine) -> None:
    """Create the dashboard's indexes if missing (idempotent; once per start)."""
    with engine.begin() as conn:
        conn.execute(text(ATTEMPTS_TS_REJECTION))


def hosts(conn: Connection) -> list[str]:
    """Every host that has records (the rollups name them all; messages when none yet)."""
    ru = schema.daily_rollups
    rows = conn.execute(select(ru.c.host).distinct().order_by(ru.c.host)).scalars().all()
    if not rows:
        m = schema.messages
        rows = conn.execute(select(m.c.host).distinct().order_by(m.c.host)).scalars().all()
    return [str(h) for h in rows]


def _rollup_where(p: Period, host: str) -> list[ColumnElement[bool]]:
    ru = schema.daily_rollups
    conds: list[ColumnElement[bool]] = [ru.c.day >= p.first_day, ru.c.day <= p.last_day]
    if host:
        conds.append(ru.c.host == host)
    return conds


def _status_key(status: str) -> str:
    return status if status in STATUSES else "other"


@dataclass(slots=True)
class ProviderRow:
    provider: str
    counts: Counter[str] = field(default_factory=Counter)  # status -> attempts
    daily: dict[dt.date, Counter[str]] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)  # non-success reason -> attempts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failures(self) -> int:
        return self.total - self.counts["sent"]


def provider_overview(conn: Connection, p: Period, host: str) -> list[ProviderRow]:
    """Attempts per provider and status, per day, from the rollups; most failures first."""
    ru = schema.daily_rollups
    q = (
        select(ru.c.provider, ru.c.day, ru.c.status, ru.c.reason, func.sum(ru.c.count))
        .where(*_rollup_where(p, host))
        .group_by(ru.c.provider, ru.c.day, ru.c.status, ru.c.reason)
    )
    rows: dict[str, ProviderRow] = {}
    for prov, day, status, reason, n in conn.execute(q):
        r = rows.get(prov)
        if r is None:
            r = rows[prov] = ProviderRow(prov)
        k = _status_key(status)
        r.counts[k] += int(n)
        r.daily.setdefault(day, Counter())[k] += int(n)
        if reason and status != "sent":
            r.reasons[reason] += int(n)
    return sorted(rows.values(), key=lambda r: (-r.failures, -r.total, r.provider))


def daily_totals(rows: list[ProviderRow], p: Period) -> list[tuple[dt.date, Counter[str]]]:
    out = []
    for d in p.day_list():
        c: Counter[str] = Counter()
        for r in rows:
            c.update(r.daily.get(d, {}))
        out.append((d, c))
    return out


def rejection_kinds(
    conn: Connection,
    p: Period,
    host: str,
    *,
    provider: str = "",
    reason: str = "",
    issuer: str = "",
    limit: int = 500,
) -> list[RejectionCount]:
    """Rejection kinds seen in the period (reply counts), with the full stored reply."""
    return provider_rejections(
        conn,
        since=p.since,
        until=p.until,
        hosts=[host] if host else None,
        provider=provider or None,
        reason=reason or None,
        issuer=issuer or None,
        limit=limit,
    )


def filter_kinds(
    kinds: list[RejectionCount], *, provider: str = "", reason: str = "", issuer: str = ""
) -> list[RejectionCount]:
    return [
        k
        for k in kinds
        if (not provider or k.provider == provider)
        and (not reason or k.reason == reason)
        and (not issuer or k.issuer == issuer)
    ]


def kind_facets(kinds: list[RejectionCount]) -> dict[str, Counter[str]]:
    """Attempt counts by provider, by reason and by issuer (for the filter links)."""
    out: dict[str, Counter[str]] = {"provider": Counter(), "reason": Counter(), "issuer": Counter()}
    for k in kinds:
        out["provider"][k.provider] += k.count
        out["reason"][k.reason] += k.count
        if k.issuer:
            out["issuer"][k.issuer] += k.count
    return out


@dataclass(slots=True)
class OriginRow:
    id: int
    kind: str
    ident: str
    name: str
    counts: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    hourly: dict[int, int] = field(default_factory=dict)  # hour start -> messages
    top_providers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def bounce_ratio(self) -> float:
        done = self.counts["sent"] + self.counts["bounced"] + self.counts["expired"]
        return (self.counts["bounced"] + self.counts["expired"]) / done if done else 0.0

    @property
    def peak(self) -> tuple[int, int]:
        """(hour start, messages) of the busiest hour, (0, 0) without messages."""
        if not self.hourly:
            return 0, 0
        h = max(self.hourly, key=lambda k: (self.hourly[k], -k))
        return h, self.hourly[h]

    @property
    def typical(self) -> float:
        """Median messages per active hour."""
        return float(statistics.median(self.hourly.values())) if self.hourly else 0.0

    @property
    def spike(self) -> bool:
        """The busiest hour has at least 20 messages and 5 times the typical active hour."""
        _, top = self.peak
        if top < 20:
            return False
        if len(self.hourly) == 1:
            return True  # everything in one hour: a burst out of silence
        return top >= 5 * self.typical

    @property
    def label(self) -> str:
        if self.kind == "uid":
            return f"uid {self.ident}" + (f" ({self.name})" if self.name else "")
        if self.kind == "sasl":
            return f"sasl {self.ident}"
        if self.kind == "client":
            return f"client {self.ident}" + (f" ({self.name})" if self.name else "")
        if self.kind == "bounce":
            return "bounces (MAILER-DAEMON)"
        return self.kind + (f" {self.ident}" if self.ident else "")


def origins(conn: Connection, p: Period, host: str, *, limit: int = 200) -> list[OriginRow]:
    """Who submitted how much: attempts per status (rollups), messages per hour (messages)."""
    ru, o, m = schema.daily_rollups, schema.origins, schema.messages
    q = (
        select(
            o.c.id, o.c.kind, o.c.ident, o.c.name, ru.c.provider, ru.c.status, func.sum(ru.c.count)
        )
        .join(o, o.c.id == ru.c.origin_id)
        .where(*_rollup_where(p, host))
        .group_by(o.c.id, o.c.kind, o.c.ident, o.c.name, ru.c.provider, ru.c.status)
    )
    rows: dict[int, OriginRow] = {}
    provs: dict[int, Counter[str]] = defaultdict(Counter)
    for oid, kind, ident, name, prov, status, n in conn.execute(q):
        r = rows.get(oid)
        if r is None:
            r = rows[oid] = OriginRow(oid, kind, ident, name)
        r.counts[_status_key(status)] += int(n)
        provs[oid][prov] += int(n)
    hour = func.floor(m.c.arrival / 3600) if conn.dialect.name != "sqlite" else _sqlite_hour(m)
    hq = (
        select(m.c.origin_id, hour.label("h"), func.count())
        .where(m.c.arrival >= p.since, m.c.arrival < p.until)
        .group_by(m.c.origin_id, hour)
    )
    if host:
        hq = hq.where(m.c.host == host)
    for oid, h, n in conn.execute(hq):
        r = rows.get(oid)
        if r is None:
            continue
        r.hourly[int(h) * 3600] = int(n)
        r.messages += int(n)
    for oid, c in provs.items():
        rows[oid].top_providers = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    out = sorted(rows.values(), key=lambda r: (-r.total, r.kind, r.ident))
    return out[:limit]


def _sqlite_hour(m: Any) -> Any:
    from sqlalchemy import Integer, cast

    return cast(m.c.arrival / 3600, Integer)


# ------------------------------------------------------------------------------ search


def messages_by(
    conn: Connection,
    *,
    ids: list[int] | None = None,
    qid: str = "",
    message_id: str = "",
    recipient: str = "",
    host: str = "",
    limit: int = 100,
) -> list[StoredMessage]:
    """Messages (with their attempts) by primary key, queue id, Message-ID or recipient,
    newest first.

    Message-IDs match with or without angle brackets; recipients case-insensitively when the
    stored address is lower case (as Postfix logs it in most set-ups).
    """
    m, a = schema.messages, schema.attempts
    q = message_select()
    if ids is not None:
        q = q.where(m.c.id.in_(ids))
    elif qid:
        q = q.where(m.c.qid == qid)
    elif message_id:
        q = q.where(message_id_matches(message_id))
    elif recipient:
        variants = sorted({recipient, recipient.lower()})
        sub = select(a.c.message_pk).where(a.c.recipient.in_(variants)).distinct()
        q = q.where(m.c.id.in_(sub))
    else:
        return []
    if host:
        q = q.where(m.c.host == host)
    return load_messages(conn, q.order_by(m.c.arrival.desc(), m.c.id.desc()).limit(limit))


def bounce_links(conn: Connection, msg: StoredMessage) -> list[StoredMessage]:
    """The bounce notices we sent about ``msg`` (same host, ``bounce_of`` = its queue id,
    arrived after it), without attempts."""
    m = schema.messages
    q = (
        message_select()
        .where(
            and_(m.c.host == msg.host, m.c.bounce_of == msg.qid, m.c.arrival >= msg.arrival),
            m.c.arrival < msg.arrival + 10 * DAY,
        )
        .order_by(m.c.arrival)
        .limit(20)
    )
    return load_messages(conn, q, with_attempts=False)


# ------------------------------------------------------------------------------ egress


def egress_events(
    conn: Connection, since: float, *, mta: bool = False, limit: int = 100, host: str = ""
) -> list[dict[str, Any]]:
    """The newest raw egress connects (kept ``[egress] raw_days``) of ``host`` (``""``: every
    host): who, with what command line, from which directory, under which parents, to where,
    and the rule's verdict."""
    import json

    from mailwarden.store.egress import egress_events as ev

    q = select(ev).where(ev.c.ts >= since).order_by(ev.c.ts.desc(), ev.c.id.desc()).limit(limit)
    if not mta:
        q = q.where(ev.c.mta.is_(False))
    if host:
        q = q.where(ev.c.host == host)
    out = []
    for r in conn.execute(q).mappings():
        d = dict(r)
        for key in ("cmdline", "parents"):
            try:
                d[key] = json.loads(d[key] or "[]")
            except ValueError:
                d[key] = []
        out.append(d)
    return out
