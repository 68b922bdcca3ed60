"""Summaries, raw-event retention and alerts for egress events (the unprivileged side).

:class:`Recorder` takes batches of :class:`~mailwarden.events.EgressConnect` and, in one write
transaction per batch: stores the raw events (pruned after ``raw_days``), adds them to the
summary row of their (uid, exe, unit, script, port, provider, allowed) with counts, first/last
seen and distinct destinations, and raises at most one alert per (who, port) per window for a
non-MTA process reaching a remote (non-loopback) SMTP port. MTA users are counted, never alerted
on. New alerts go to a :class:`Notifier` after the transaction commits.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, select, update

from mailwarden.events import EgressConnect
from mailwarden.store.db import write_transaction
from mailwarden.store.egress import (
    egress_alerts,
    egress_events,
    egress_summary,
    egress_summary_dest,
)

log = logging.getLogger("mailwarden.egress")
MAX_EVIDENCE_DESTS = 20


def _hash(*parts: object) -> str:
    raw = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(raw.encode("utf-8", "replace"), digest_size=20).hexdigest()


def is_remote(addr: str) -> bool:
    """True unless the address is loopback or unspecified (local submission is not egress)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return not (ip.is_loopback or ip.is_unspecified)


def allowed_of(ev: EgressConnect) -> bool:
    return ev.verdict != "blocked"


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
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


class WebhookNotifier:
    """POSTs each alert as JSON to a URL from a background thread (never blocks recording)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._q: queue.Queue[Alert | None] = queue.Queue(maxsize=1000)
        self._t = threading.Thread(target=self._run, name="egress-webhook", daemon=True)
        self._t.start()

    def notify(self, alert: Alert) -> None:
        try:
            self._q.put_nowait(alert)
        except queue.Full:
            self.failed += 1

    def _run(self) -> None:
        while (a := self._q.get()) is not None:
            body = json.dumps({"kind": "egress", "alert": a.as_dict(), "text": a.text()}).encode()
            req = urllib.request.Request(
                self.url, body, {"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
                self.sent += 1
            except Exception as exc:  # a webhook failure must never stop recording
                self.failed += 1
                log.warning("egress webhook %s failed: %s", self.url, exc)
            finally:
                self._q.task_done()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop."""
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        self._q.put(None)


class MultiNotifier:
    def __init__(self, notifiers: Iterable[Notifier]) -> None:
        self.notifiers = list(notifiers)

    def notify(self, alert: Alert) -> None:
        for n in self.notifiers:
            try:
                n.notify(alert)
            except Exception as exc:  # one broken notifier does not silence the others
                log.error("egress notifier %r failed: %s", n, exc)


class Recorder:
    """Writes batches of egress events into the store and raises alerts."""

    def __init__(
        self,
        engine: Engine,
        *,
        notifier: Notifier | None = None,
        raw_days: int = 7,
        alert_window: int = 3600,
    ) -> None:
        self.engine = engine
        self.notifier = notifier or LogNotifier()
        self.raw_days = raw_days
        self.alert_window = alert_window
        self._last_prune = 0.0

    def record(self, events: Sequence[EgressConnect]) -> list[Alert]:
        """Store a batch; return the alerts it raised (already handed to the notifier)."""
        if not events:
            return []
        new_alerts: list[Alert] = []
        with write_transaction(self.engine) as conn:
            conn.execute(egress_events.insert(), [self._raw_row(e) for e in events])
            for e in events:
                self._summarise(conn, e)
                a = self._alert(conn, e)
                if a is not None:
                    new_alerts.append(a)
            now = time.time()
            if now - self._last_prune > 3600:
                self._last_prune = now
                conn.execute(
                    delete(egress_events).where(egress_events.c.ts < now - self.raw_days * 86400)
                )
        for a in new_alerts:
            self.notifier.notify(a)
        return new_alerts

    @staticmethod
    def _raw_row(e: EgressConnect) -> dict[str, Any]:
        return {
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

    def _summarise(self, conn: Any, e: EgressConnect) -> None:
        uid = -1 if e.uid is None else e.uid
        allowed = allowed_of(e)
        key = _hash(uid, e.exe, e.unit, e.script, e.dport, e.provider, allowed)
        t = egress_summary
        row = conn.execute(select(t.c.id).where(t.c.key == key)).first()
        if row is None:
            sid = conn.execute(
                t.insert().values(
                    key=key,
                    uid=uid,
                    user=e.user,
                    exe=e.exe,
                    unit=e.unit,
                    script=e.script,
                    port=e.dport,
                    provider=e.provider,
                    allowed=allowed,
                    mta=e.mta,
                    count=1,
                    first_seen=e.ts,
                    last_seen=e.ts,
                    destinations=0,
                )
            ).inserted_primary_key[0]
        else:
            sid = row[0]
            conn.execute(
                update(t)
                .where(t.c.id == sid)
                .values(
                    count=t.c.count + 1,
                    first_seen=_least(conn, t.c.first_seen, e.ts),
                    last_seen=_greatest(conn, t.c.last_seen, e.ts),
                    user=e.user or t.c.user,
                )
            )
        d = egress_summary_dest
        hit = conn.execute(
            update(d)
            .where(d.c.summary_id == sid, d.c.daddr == e.daddr)
            .values(count=d.c.count + 1, last_seen=_greatest(conn, d.c.last_seen, e.ts))
        )
        if hit.rowcount == 0:
            conn.execute(d.insert().values(summary_id=sid, daddr=e.daddr, count=1, last_seen=e.ts))
            conn.execute(update(t).where(t.c.id == sid).values(destinations=t.c.destinations + 1))

    def _alert(self, conn: Any, e: EgressConnect) -> Alert | None:
        if e.mta or not is_remote(e.daddr):
            return None
        uid = -1 if e.uid is None else e.uid
        who = e.script or e.exe or e.unit or e.comm
        key = _hash(uid, who, e.unit, e.dport)
        window = e.ts - (e.ts % self.alert_window)
        t = egress_alerts
        row = conn.execute(
            select(t.c.id, t.c.evidence).where(t.c.key == key, t.c.window_start == window)
        ).first()
        blocked = 1 if e.verdict == "blocked" else 0
        if row is not None:
            ev = json.loads(row[1])
            dests = ev.setdefault("destinations", [])
            if e.daddr not in dests and len(dests) < MAX_EVIDENCE_DESTS:
                dests.append(e.daddr)
            ev["count"] = ev.get("count", 0) + 1
            if e.pid and e.pid not in ev.setdefault("pids", []) and len(ev["pids"]) < 50:
                ev["pids"].append(e.pid)
            conn.execute(
                update(t)
                .where(t.c.id == row[0])
                .values(
                    count=t.c.count + 1,
                    blocked=t.c.blocked + blocked,
                    last_seen=_greatest(conn, t.c.last_seen, e.ts),
                    evidence=json.dumps(ev),
                )
            )
            return None
        evidence = {
            "pid": e.pid,
            "pids": [e.pid] if e.pid else [],
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
            "destinations": [e.daddr],
            "count": 1,
            "verdict": e.verdict,
            "provider": e.provider,
            "source": e.source,
        }
        now = time.time()
        aid = conn.execute(
            t.insert().values(
                key=key,
                window_start=window,
                raised_at=now,
                last_seen=e.ts,
                uid=uid,
                user=e.user,
                exe=e.exe,
                unit=e.unit,
                script=e.script,
                port=e.dport,
                count=1,
                blocked=blocked,
                evidence=json.dumps(evidence),
                notified=True,
            )
        ).inserted_primary_key[0]
        return Alert(
            aid, uid, e.user, e.exe, e.unit, e.script, e.dport, window, now, 1, blocked, evidence
        )


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


def top(
    engine: Engine, *, since: float = 0.0, limit: int = 50, include_mta: bool = True
) -> list[dict[str, Any]]:
    """Summary rows, busiest first, in the ``egress top --json`` shape."""
    t = egress_summary
    q = select(t).where(t.c.last_seen >= since).order_by(t.c.count.desc(), t.c.id).limit(limit)
    if not include_mta:
        q = q.where(t.c.mta.is_(False))
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [
        {
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


def alerts(engine: Engine, *, since: float = 0.0, limit: int = 100) -> list[dict[str, Any]]:
    """Alert records, newest first."""
    t = egress_alerts
    q = select(t).where(t.c.last_seen >= since).order_by(t.c.raised_at.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        d["evidence"] = json.loads(d["evidence"])
        d.pop("key", None)
        out.append(d)
    return out
