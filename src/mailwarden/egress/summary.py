"""Summaries, raw-event retention and alerts for egress events (the unprivileged side).

:class:`Recorder` takes batches of :class:`~mailwarden.events.EgressConnect` and, in one write
transaction per batch: stores the raw events (pruned after ``raw_days``), adds them to the
summary row of their (uid, exe, unit, script, port, provider, allowed) with counts, first/last
seen and distinct destinations, and raises at most one alert per (who, port) per window for a
non-MTA process reaching a remote (non-loopback) SMTP port. MTA users are counted, never alerted
on. New alerts go to a :class:`Notifier` after the transaction commits (the daemon and
``egress ingest`` pass :class:`mailwarden.report.alerts.EgressAdapter`, so egress alerts take the
one alert path: channels, dedup and rate limits of ``[alerts]``).

Every row is tagged with the recorder's ``host`` (fleet mode: one store, several hosts);
:func:`top` and :func:`alerts` read one host's rows or, with ``host=""``, the fleet's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, select, update

from mailwarden.egress.attribute import is_remote
from mailwarden.events import EgressConnect
from mailwarden.store.db import write_transaction
from mailwarden.store.egress import (
    EGRESS_TABLES,
    egress_alerts,
    egress_events,
    egress_summary,
    egress_summary_dest,
)

log = logging.getLogger("mailwarden.egress")
MAX_EVIDENCE_DESTS = 20
MAX_EVIDENCE_PIDS = 50


def _hash(*parts: object) -> str:
    raw = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(raw.encode("utf-8", "replace"), digest_size=20).hexdigest()


def allowed_of(ev: EgressConnect) -> bool:
    return ev.verdict != "blocked"


def summary_key(
    host: str, uid: int, exe: str, unit: str, script: str, port: int, provider: str, allowed: bool
) -> str:
    """The natural key of a summary row (hashed: the parts are long free text)."""
    return _hash(host, uid, exe, unit, script, port, provider, allowed)


@dataclass
class Alert:
    """One alert: a non-MTA process reached a remote SMTP port (first event of the window)."""

    id: int
    uid: int
    user: str
    exe: str
    unit: str
    script: str
    port: int
    window_start: float
    raised_at: float
    count: int
    blocked: int
    evidence: dict[str, Any] = field(default_factory=dict)
    host: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "uid": self.uid,
            "user": self.user,
            "exe": self.exe,
            "unit": self.unit,
            "script": self.script,
            "port": self.port,
            "window_start": self.window_start,
            "raised_at": self.raised_at,
            "count": self.count,
            "blocked": self.blocked,
            "evidence": self.evidence,
        }

    def text(self) -> str:
        who = self.script or self.exe or self.unit or "?"
        dests = ", ".join(self.evidence.get("destinations", [])[:5])
        return (
            f"egress: {self.user or self.uid} ({who}) connected to remote SMTP port {self.port}"
            f" [{dests}] pid {self.evidence.get('pid')}"
            + (f", {self.blocked} blocked" if self.blocked else "")
        )


class Notifier(Protocol):
    """Receives each new alert once. Implement :meth:`notify`; must not raise."""

    def notify(self, alert: Alert) -> None: ...


class LogNotifier:
    """Writes alerts to the ``mailwarden.egress`` logger (warning level)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger

    def notify(self, alert: Alert) -> None:
        self.logger.warning("%s", alert.text())


class Recorder:
    """Writes batches of egress events into the store and raises alerts."""

    def __init__(
        self,
        engine: Engine,
        *,
        host: str = "",
        notifier: Notifier | None = None,
        raw_days: int = 7,
        alert_window: int = 3600,
    ) -> None:
        self.engine = engine
        self.host = host
        self.notifier = notifier or LogNotifier()
        self.raw_days = raw_days
        self.alert_window = alert_window
        self._last_prune = 0.0
        if host:
            claim_unkeyed(engine, host)

    def record(self, events: Sequence[EgressConnect]) -> list[Alert]:
        """Store a batch; return the alerts it raised (already handed to the notifier).

        The batch is folded in memory first (one summary update per group, one destination
        update per distinct address, one alert update per (who, port, window)), so the cost per
        transaction grows with the variety of the batch, not its size.
        """
        if not events:
            return []
        groups: dict[str, _Group] = {}
        pending: dict[tuple[str, float], _Pending] = {}
        for e in events:
            uid = -1 if e.uid is None else e.uid
            allowed = allowed_of(e)
            key = summary_key(self.host, uid, e.exe, e.unit, e.script, e.dport, e.provider, allowed)
            g = groups.get(key)
            if g is None:
                g = groups[key] = _Group(e, uid, allowed)
            g.add(e)
            if e.mta or not is_remote(e.daddr):
                continue
            who = e.script or e.exe or e.unit or e.comm
            akey = _hash(self.host, uid, who, e.unit, e.dport)
            window = e.ts - (e.ts % self.alert_window)
            pa = pending.get((akey, window))
            if pa is None:
                pa = pending[(akey, window)] = _Pending(e, uid)
            pa.add(e)
        new_alerts: list[Alert] = []
        with write_transaction(self.engine) as conn:
            conn.execute(egress_events.insert(), [self._raw_row(e) for e in events])
            for key, g in groups.items():
                self._summarise(conn, key, g)
            for (akey, window), pa in pending.items():
                alert = self._alert(conn, akey, window, pa)
                if alert is not None:
                    new_alerts.append(alert)
            now = time.time()
            if now - self._last_prune > 3600:
                self._last_prune = now
                conn.execute(
                    delete(egress_events).where(
                        egress_events.c.host == self.host,
                        egress_events.c.ts < now - self.raw_days * 86400,
                    )
                )
        for alert in new_alerts:
            self.notifier.notify(alert)
        return new_alerts

    def _raw_row(self, e: EgressConnect) -> dict[str, Any]:
        return {
            "host": self.host,
            "ts": e.ts,
            "source": e.source,
            "uid": e.uid,
            "user": e.user,
            "pid": e.pid,
            "ppid": e.ppid,
            "comm": e.comm,
            "exe": e.exe,
            "cmdline": json.dumps(list(e.cmdline)),
            "cwd": e.cwd,
            "script": e.script,
            "pool": e.pool,
            "unit": e.unit,
            "container": e.container,
            "cgroup": e.cgroup,
            "parents": json.dumps([list(p) for p in e.parents]),
            "family": e.family,
            "daddr": e.daddr,
            "dport": e.dport,
            "saddr": e.saddr,
            "sport": e.sport,
            "netns": e.netns,
            "verdict": e.verdict,
            "allowed": allowed_of(e),
            "mta": e.mta,
            "provider": e.provider,
            "ptr": e.ptr,
        }

    def _summarise(self, conn: Any, key: str, g: _Group) -> None:
        e = g.first_event
        t = egress_summary
        row = conn.execute(select(t.c.id).where(t.c.key == key)).first()
        if row is None:
            sid = conn.execute(
                t.insert().values(
                    key=key,
                    host=self.host,
                    uid=g.uid,
                    user=e.user,
                    exe=e.exe,
                    unit=e.unit,
                    script=e.script,
                    port=e.dport,
                    provider=e.provider,
                    allowed=g.allowed,
                    mta=e.mta,
                    count=g.count,
                    first_seen=g.first,
                    last_seen=g.last,
                    destinations=0,
                )
            ).inserted_primary_key[0]
        else:
            sid = row[0]
            conn.execute(
                update(t)
                .where(t.c.id == sid)
                .values(
                    count=t.c.count + g.count,
                    first_seen=_least(conn, t.c.first_seen, g.first),
                    last_seen=_greatest(conn, t.c.last_seen, g.last),
                )
            )
        d = egress_summary_dest
        added = 0
        for daddr, (n, last) in g.dests.items():
            hit = conn.execute(
                update(d)
                .where(d.c.summary_id == sid, d.c.daddr == daddr)
                .values(count=d.c.count + n, last_seen=_greatest(conn, d.c.last_seen, last))
            )
            if hit.rowcount == 0:
                conn.execute(
                    d.insert().values(summary_id=sid, daddr=daddr, count=n, last_seen=last)
                )
                added += 1
        if added:
            conn.execute(
                update(t).where(t.c.id == sid).values(destinations=t.c.destinations + added)
            )

    def _alert(self, conn: Any, key: str, window: float, pa: _Pending) -> Alert | None:
        t = egress_alerts
        row = conn.execute(
            select(t.c.id, t.c.evidence).where(t.c.key == key, t.c.window_start == window)
        ).first()
        if row is not None:
            ev = json.loads(row[1])
            pa.merge_into(ev)
            conn.execute(
                update(t)
                .where(t.c.id == row[0])
                .values(
                    count=t.c.count + pa.count,
                    blocked=t.c.blocked + pa.blocked,
                    last_seen=_greatest(conn, t.c.last_seen, pa.last),
                    evidence=json.dumps(ev),
                )
            )
            return None
        e = pa.first_event
        evidence = pa.evidence()
        now = time.time()
        aid = conn.execute(
            t.insert().values(
                key=key,
                host=self.host,
                window_start=window,
                raised_at=now,
                last_seen=pa.last,
                uid=pa.uid,
                user=e.user,
                exe=e.exe,
                unit=e.unit,
                script=e.script,
                port=e.dport,
                count=pa.count,
                blocked=pa.blocked,
                evidence=json.dumps(evidence),
                notified=True,
            )
        ).inserted_primary_key[0]
        return Alert(
            aid,
            pa.uid,
            e.user,
            e.exe,
            e.unit,
            e.script,
            e.dport,
            window,
            now,
            pa.count,
            pa.blocked,
            evidence,
            self.host,
        )


class _Group:
    """One summary row's share of a batch."""

    def __init__(self, e: EgressConnect, uid: int, allowed: bool) -> None:
        self.first_event = e
        self.uid = uid
        self.allowed = allowed
        self.count = 0
        self.first = e.ts
        self.last = e.ts
        self.dests: dict[str, tuple[int, float]] = {}

    def add(self, e: EgressConnect) -> None:
        self.count += 1
        self.first = min(self.first, e.ts)
        self.last = max(self.last, e.ts)
        n, last = self.dests.get(e.daddr, (0, e.ts))
        self.dests[e.daddr] = (n + 1, max(last, e.ts))


class _Pending:
    """One alert's share of a batch: the first event is the evidence, the rest is counted."""

    def __init__(self, e: EgressConnect, uid: int) -> None:
        self.first_event = e
        self.uid = uid
        self.count = 0
        self.blocked = 0
        self.last = e.ts
        self.dests: list[str] = []
        self.pids: list[int] = []

    def add(self, e: EgressConnect) -> None:
        self.count += 1
        self.blocked += e.verdict == "blocked"
        self.last = max(self.last, e.ts)
        if e.daddr not in self.dests:
            self.dests.append(e.daddr)
        if e.pid and e.pid not in self.pids:
            self.pids.append(e.pid)

    def evidence(self) -> dict[str, Any]:
        e = self.first_event
        return {
            "pid": e.pid,
            "pids": self.pids[:MAX_EVIDENCE_PIDS],
            "ppid": e.ppid,
            "comm": e.comm,
            "exe": e.exe,
            "cmdline": list(e.cmdline),
            "cwd": e.cwd,
            "script": e.script,
            "pool": e.pool,
            "unit": e.unit,
            "container": e.container,
            "parents": [list(p) for p in e.parents],
            "destinations": self.dests[:MAX_EVIDENCE_DESTS],
            "count": self.count,
            "verdict": e.verdict,
            "provider": e.provider,
            "source": e.source,
        }

    def merge_into(self, ev: dict[str, Any]) -> None:
        dests = ev.setdefault("destinations", [])
        for dst in self.dests:
            if dst not in dests and len(dests) < MAX_EVIDENCE_DESTS:
                dests.append(dst)
        pids = ev.setdefault("pids", [])
        for pid in self.pids:
            if pid not in pids and len(pids) < MAX_EVIDENCE_PIDS:
                pids.append(pid)
        ev["count"] = ev.get("count", 0) + self.count


def _least(conn: Any, col: Any, value: float) -> Any:
    """SQL min(col, value) for SQLite (scalar min) and PostgreSQL (LEAST)."""
    if conn.dialect.name == "sqlite":
        return func.min(col, value)
    return func.least(col, value)


def _greatest(conn: Any, col: Any, value: float) -> Any:
    """SQL max(col, value) for SQLite (scalar max) and PostgreSQL (GREATEST)."""
    if conn.dialect.name == "sqlite":
        return func.max(col, value)
    return func.greatest(col, value)


# --------------------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------------------


def claim_unkeyed(engine: Engine, host: str) -> int:
    """Give egress rows from before the host key to ``host``; summary keys are recomputed with
    the host (they are hashes of it and the grouping columns), so later events join the rows."""
    from mailwarden.store.egress import claim_unkeyed as claim

    if not host:
        return 0
    t = egress_summary
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                t.c.id, t.c.uid, t.c.exe, t.c.unit, t.c.script, t.c.port, t.c.provider, t.c.allowed
            ).where(t.c.host == "")
        ).all()
    if rows:
        with write_transaction(engine) as conn:
            for r in rows:
                key = summary_key(
                    host, r.uid, r.exe, r.unit, r.script, r.port, r.provider, bool(r.allowed)
                )
                if conn.execute(select(t.c.id).where(t.c.key == key)).first() is None:
                    conn.execute(update(t).where(t.c.id == r.id).values(key=key, host=host))
    return claim(engine, host) + len(rows)


def top(
    engine: Engine,
    *,
    since: float = 0.0,
    limit: int = 50,
    include_mta: bool = True,
    host: str = "",
) -> list[dict[str, Any]]:
    """Summary rows of ``host`` (``""``: every host), busiest first, in the ``egress top
    --json`` shape."""
    t = egress_summary
    q = select(t).where(t.c.last_seen >= since).order_by(t.c.count.desc(), t.c.id).limit(limit)
    if not include_mta:
        q = q.where(t.c.mta.is_(False))
    if host:
        q = q.where(t.c.host == host)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [
        {
            "host": r["host"],
            "uid": None if r["uid"] == -1 else r["uid"],
            "user": r["user"],
            "exe": r["exe"],
            "unit": r["unit"],
            "script": r["script"],
            "port": r["port"],
            "provider": r["provider"],
            "allowed": bool(r["allowed"]),
            "count": r["count"],
            "first_seen": r["first_seen"],
            "last_seen": r["last_seen"],
            "destinations": r["destinations"],
        }
        for r in rows
    ]


def alerts(
    engine: Engine, *, since: float = 0.0, limit: int = 100, host: str = ""
) -> list[dict[str, Any]]:
    """Alert records of ``host`` (``""``: every host), newest first."""
    t = egress_alerts
    q = select(t).where(t.c.last_seen >= since).order_by(t.c.raised_at.desc()).limit(limit)
    if host:
        q = q.where(t.c.host == host)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        d["evidence"] = json.loads(d["evidence"])
        d.pop("key", None)
        out.append(d)
    return out


def egress_hosts(engine: Engine) -> list[str]:
    """Every host with egress records."""
    from sqlalchemy import union

    q = union(*[select(t.c.host) for t in EGRESS_TABLES])
    with engine.connect() as conn:
        return sorted({str(r[0]) for r in conn.execute(q)})
