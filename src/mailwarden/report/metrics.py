"""Prometheus metrics computed from the store at scrape time (a custom ``Collector``).

Nothing is counted in memory: every scrape reads the store, so ``mailwarden web`` and
``mailwarden run`` export the same numbers, and a restart loses nothing. Each query is cheap
(the rollups, the rejection kinds, the breaker and egress summaries are small; the newest line
per host is an index probe on the newest day).

=====================================================  =====  ====================================
metric                                                 type   labels
=====================================================  =====  ====================================
``mailwarden_deliveries_total``                        count  host, provider, status
``mailwarden_rejections_total``                        count  provider, reason, scope, issuer
``mailwarden_breaker_state``                           gauge  host, provider, ip, state (1: now)
``mailwarden_breaker_since_timestamp_seconds``         gauge  host, provider, ip
``mailwarden_breaker_until_timestamp_seconds``         gauge  host, provider, ip (with a timer)
``mailwarden_breaker_transitions_total``               count  host, provider, from, to
``mailwarden_parked_recipients``                       gauge  provider (from the Postfix queue)
``mailwarden_held_recipients``                         gauge  provider
``mailwarden_queue_up``                                gauge  (1: the queue could be read)
``mailwarden_egress_connections_total``                count  host, user, verdict, port, mta
``mailwarden_egress_alerts_total``                     count  host, user
``mailwarden_log_newest_line_timestamp_seconds``       gauge  host
``mailwarden_log_lag_seconds``                         gauge  host (now - newest imported line)
``mailwarden_log_lines_total``                         count  result (parsed, ignored, unparsed)
``mailwarden_store_up``                                gauge  (0: the store could not be read)
``mailwarden_collect_duration_seconds``                gauge  (time this scrape took)
=====================================================  =====  ====================================

``host`` is the host a record belongs to (fleet mode: several hosts share one store, so every
host's ``/metrics`` shows the fleet); the queue gauges are the scraped host's own Postfix.
Deliveries count attempts (each retry counts), from the daily rollups, so they survive the
pruning of attempts. Log line counts are kept in ``store_meta`` by :func:`record_line_counts`,
which the daemon's store writer calls in the transaction of each unit it writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from mailwarden.store import schema

log = logging.getLogger("mailwarden.metrics")

LINE_RESULTS = ("parsed", "ignored", "unparsed")
_META_PREFIX = "lines."
BREAKER_STATES = ("closed", "slowed", "open", "probing")


def record_line_counts(store: Engine | Connection, counts: Mapping[str, int]) -> None:
    """Add ``counts`` (``parsed``/``ignored``/``unparsed`` lines, as in the analyze document's
    ``lines``) to the running totals kept in ``store_meta``.

    ``store`` is the connection of an open write transaction (the daemon's store writer passes
    its unit's, so the counts commit with the rows and checkpoints they belong to), or an engine
    for a write transaction of their own."""
    if isinstance(store, Engine):
        from mailwarden.store.db import write_transaction

        with write_transaction(store) as conn:
            record_line_counts(conn, counts)
        return
    t = schema.store_meta
    for key in LINE_RESULTS:
        n = int(counts.get(key, 0) or 0)
        if n <= 0:
            continue
        k = _META_PREFIX + key
        old = store.execute(select(t.c.value).where(t.c.key == k)).scalar()
        if old is None:
            store.execute(t.insert().values(key=k, value=str(n)))
        else:
            new = (int(old) if str(old).isdigit() else 0) + n
            store.execute(t.update().where(t.c.key == k).values(value=str(new)))


ParkedFn = Callable[[], Mapping[str, Any]]


class StoreCollector(Collector):
    """Yields every mailwarden metric from the store at ``engine``.

    ``parked`` (optional) returns the queue inventory per provider: objects with ``parked`` and
    ``held`` attributes (cached by the caller: it runs ``postqueue``). ``clock`` is the time
    source of the lag (tests pass a fixed one).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        parked: ParkedFn | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.parked = parked
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # registering must not query the store

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        up = GaugeMetricFamily("mailwarden_store_up", "1 when the store could be read.")
        try:
            with self.engine.connect() as conn:
                fams = list(self._from_store(conn))
        except Exception:
            log.exception("metrics: reading the store failed")
            fams = []
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
        yield from fams
        yield up
        yield from self._queue()
        d = GaugeMetricFamily(
            "mailwarden_collect_duration_seconds", "Time this scrape spent reading the store."
        )
        d.add_metric([], time.perf_counter() - t0)
        yield d

    # -------------------------------------------------------------------- store

    def _from_store(self, conn: Connection) -> Iterator[Metric]:
        yield self._deliveries(conn)
        yield self._rejections(conn)
        yield from self._breaker(conn)
        yield from self._egress(conn)
        yield from self._log(conn)

    def _deliveries(self, conn: Connection) -> Metric:
        ru = schema.daily_rollups
        m = CounterMetricFamily(
            "mailwarden_deliveries",
            "Delivery attempts by host, provider and status (each retry counts; from the daily "
            "rollups).",
            labels=["host", "provider", "status"],
        )
        q = select(ru.c.host, ru.c.provider, ru.c.status, func.sum(ru.c.count)).group_by(
            ru.c.host, ru.c.provider, ru.c.status
        )
        for host, prov, status, n in conn.execute(q):
            m.add_metric([host, prov or "unknown", status], int(n))
        return m

    def _rejections(self, conn: Connection) -> Metric:
        r = schema.rejections
        m = CounterMetricFamily(
            "mailwarden_rejections",
            "Attempts refused or deferred by a receiver, by provider, reason, scope and the "
            "blocklist/reputation issuer named in the reply (Postfix's own deferrals excluded).",
            labels=["provider", "reason", "scope", "issuer"],
        )
        q = (
            select(r.c.provider, r.c.reason, r.c.scope, r.c.issuer, func.sum(r.c.count))
            .where(r.c.internal.is_(False))
            .group_by(r.c.provider, r.c.reason, r.c.scope, r.c.issuer)
        )
        for prov, reason, scope, issuer, n in conn.execute(q):
            m.add_metric([prov or "unknown", reason, scope, issuer], int(n))
        return m

    def _breaker(self, conn: Connection) -> Iterator[Metric]:
        from mailwarden.store.breaker import breaker_state, breaker_transitions

        st = GaugeMetricFamily(
            "mailwarden_breaker_state",
            "Circuit breaker state per host and provider (and sending IP, '' = all): 1 for the "
            "current state.",
            labels=["host", "provider", "ip", "state"],
        )
        since = GaugeMetricFamily(
            "mailwarden_breaker_since_timestamp_seconds",
            "When the breaker entered its current state.",
            labels=["host", "provider", "ip"],
        )
        until = GaugeMetricFamily(
            "mailwarden_breaker_until_timestamp_seconds",
            "When an open or slowed breaker's timer ends (absent: no timer).",
            labels=["host", "provider", "ip"],
        )
        q = select(
            breaker_state.c.host,
            breaker_state.c.provider,
            breaker_state.c.ip,
            breaker_state.c.state,
            breaker_state.c.since,
            breaker_state.c.until,
        )
        for host, prov, ip, state, t_since, t_until in conn.execute(q):
            for s in BREAKER_STATES:
                st.add_metric([host, prov, ip, s], 1.0 if s == state else 0.0)
            since.add_metric([host, prov, ip], float(t_since))
            if t_until is not None:
                until.add_metric([host, prov, ip], float(t_until))
        yield st
        yield since
        yield until
        tr = CounterMetricFamily(
            "mailwarden_breaker_transitions",
            "Breaker state changes per host and provider.",
            labels=["host", "provider", "from", "to"],
        )
        t = breaker_transitions
        q2 = select(t.c.host, t.c.provider, t.c.old, t.c.new, func.count()).group_by(
            t.c.host, t.c.provider, t.c.old, t.c.new
        )
        for host, prov, old, new, n in conn.execute(q2):
            tr.add_metric([host, prov, old, new], int(n))
        yield tr

    def _egress(self, conn: Connection) -> Iterator[Metric]:
        from mailwarden.store.egress import egress_alerts, egress_summary

        s = egress_summary
        m = CounterMetricFamily(
            "mailwarden_egress_connections",
            "Connections to remote SMTP ports by host, local user, verdict of the egress rule, "
            "port, and whether the user is the MTA's.",
            labels=["host", "user", "verdict", "port", "mta"],
        )
        cols = (s.c.host, s.c.user, s.c.uid, s.c.allowed, s.c.port, s.c.mta)
        q = select(*cols, func.sum(s.c.count)).group_by(*cols)
        for host, user, uid, allowed, port, mta, n in conn.execute(q):
            who = user or (f"uid:{uid}" if uid is not None and uid >= 0 else "unknown")
            verdict = "allowed" if allowed else "blocked"
            m.add_metric([host, who, verdict, str(port), "true" if mta else "false"], int(n))
        yield m
        a = egress_alerts
        al = CounterMetricFamily(
            "mailwarden_egress_alerts",
            "Egress alerts raised, by host and local user.",
            labels=["host", "user"],
        )
        for host, user, uid, n in conn.execute(
            select(a.c.host, a.c.user, a.c.uid, func.count()).group_by(a.c.host, a.c.user, a.c.uid)
        ):
            al.add_metric([host, user or (f"uid:{uid}" if uid >= 0 else "unknown")], int(n))
        yield al

    def _log(self, conn: Connection) -> Iterator[Metric]:
        newest = GaugeMetricFamily(
            "mailwarden_log_newest_line_timestamp_seconds",
            "Time of the newest imported log line (delivery attempt or arrival) per host.",
            labels=["host"],
        )
        lag = GaugeMetricFamily(
            "mailwarden_log_lag_seconds",
            "Seconds between now and the newest imported log line, per host.",
            labels=["host"],
        )
        now = self.clock()
        for host, ts in newest_per_host(conn).items():
            newest.add_metric([host], ts)
            lag.add_metric([host], max(0.0, now - ts))
        yield newest
        yield lag
        lines = CounterMetricFamily(
            "mailwarden_log_lines",
            "Log lines read, by result (unparsed: not understood; counted, never fatal).",
            labels=["result"],
        )
        t = schema.store_meta
        rows = dict(
            conn.execute(select(t.c.key, t.c.value).where(t.c.key.like(_META_PREFIX + "%"))).all()
        )
        for key in LINE_RESULTS:
            v = str(rows.get(_META_PREFIX + key, "0"))
            lines.add_metric([key], int(v) if v.isdigit() else 0)
        yield lines

    # -------------------------------------------------------------------- queue

    def _queue(self) -> Iterator[Metric]:
        if self.parked is None:
            return
        up = GaugeMetricFamily("mailwarden_queue_up", "1 when the Postfix queue could be read.")
        parked = GaugeMetricFamily(
            "mailwarden_parked_recipients",
            "Recipients the breaker parked (deferred while open), per provider.",
            labels=["provider"],
        )
        held = GaugeMetricFamily(
            "mailwarden_held_recipients",
            "Recipients of a provider in the hold queue (parked mail kept from expiring).",
            labels=["provider"],
        )
        try:
            inv = self.parked()
        except Exception:
            log.exception("metrics: reading the queue failed")
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for prov, pq in sorted(inv.items()):
                parked.add_metric([prov], int(pq.parked))
                held.add_metric([prov], int(pq.held))
        yield up
        yield parked
        yield held


def newest_per_host(conn: Connection) -> dict[str, float]:
    """Newest arrival or attempt per host, looked up only inside each host's newest rollup day
    (index ranges), never by scanning the whole store."""
    ru, m, a = schema.daily_rollups, schema.messages, schema.attempts
    out: dict[str, float] = {}
    last_days = conn.execute(select(ru.c.host, func.max(ru.c.day)).group_by(ru.c.host)).all()
    if not last_days:  # rollups not written (yet): one probe over everything
        row = conn.execute(select(m.c.host, func.max(m.c.arrival)).group_by(m.c.host)).all()
        return {str(h): float(t) for h, t in row if t is not None}
    from mailwarden.web.queries import day_start

    for host, day in last_days:
        start = day_start(day)
        # a message arrives before its attempts: look one day further back for the arrival
        arr = conn.execute(
            select(func.max(m.c.arrival)).where(m.c.arrival >= start - 86400, m.c.host == host)
        ).scalar()
        att = conn.execute(
            select(func.max(a.c.ts))
            .select_from(a.join(m, m.c.id == a.c.message_pk))
            .where(a.c.ts >= start, m.c.host == host)
        ).scalar()
        vals = [float(v) for v in (arr, att) if v is not None]
        if vals:
            out[str(host)] = max(vals)
    return out


def registry(engine: Engine, *, parked: ParkedFn | None = None, process: bool = True) -> Any:
    """A fresh registry with the store collector (and the process's own metrics)."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(engine, parked=parked))
    if process:
        ProcessCollector(namespace="mailwarden", registry=reg)
    return reg
