"""Scheduled jobs of the daemon: retention, blocklist checks, spike and SASL burst detection,
the daily report. One :class:`Scheduler` thread runs them in turn; when each last ran is kept
in the store (``service_state``), so a restart neither repeats nor skips them.

Every job is a plain function of a :class:`JobContext`; a failing job is logged and tried
again at its next turn (it never stops the others).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from mailwarden.config import Settings
    from mailwarden.report.alerts import Dispatcher

log = logging.getLogger("mailwarden.service.jobs")


@dataclass
class JobContext:
    settings: Settings
    engine: Engine
    host: str
    dispatcher: Dispatcher
    hosts: Callable[[], set[str]] = field(default=lambda: set())  # log hosts seen by the ingest

    def log_hosts(self) -> set[str]:
        return self.hosts() or {self.host}


# ------------------------------------------------------------------------------------------
# Jobs
# ------------------------------------------------------------------------------------------


def retention(ctx: JobContext, now: float) -> dict[str, Any]:
    from sqlalchemy import delete

    from mailwarden.store.breaker import breaker_hits
    from mailwarden.store.db import write_transaction
    from mailwarden.store.retention import prune
    from mailwarden.store.service import alert_deliveries, alerts, sasl_failures

    s = ctx.settings.store
    pr = prune(ctx.engine, attempts_days=s.attempts_days, rollup_days=s.rollup_days, now=now)
    cut = now - s.attempts_days * 86400.0
    with write_transaction(ctx.engine) as conn:
        n_sasl = conn.execute(delete(sasl_failures).where(sasl_failures.c.ts < cut)).rowcount
        conn.execute(delete(alert_deliveries).where(alert_deliveries.c.ts < cut))
        conn.execute(delete(alerts).where(alerts.c.ts < now - s.rollup_days * 86400.0))
        conn.execute(delete(breaker_hits).where(breaker_hits.c.ts < now - 7 * 86400.0))
    return {"attempts": pr.attempts, "messages": pr.messages, "sasl_failures": n_sasl}


def dnsbl_check(ctx: JobContext, now: float) -> dict[str, Any]:
    """Query the blocklists for our IPs and domains; alert on what changed since last time."""
    from mailwarden.identity import detect_identity
    from mailwarden.report.alerts import from_listing_change
    from mailwarden.reputation import dnsbl
    from mailwarden.reputation.dns import Dns
    from mailwarden.store.db import write_transaction
    from mailwarden.store.service import get_state, set_state

    st = ctx.settings
    ident = detect_identity(st.identity, config_dir=st.breaker.postfix_config)
    ips = sorted(ip for ip in ident.ips if _is_global(ip))
    domains = sorted(ident.domains)
    if not ips and not domains:
        return {"checked": 0, "note": "no public IP or domain known ([identity])"}
    zones = dnsbl.load_zones()
    dns = Dns.from_settings(st.dns)
    listings = dnsbl.check(dns, ips, zones, "ip") + dnsbl.check(dns, domains, zones, "domain")
    before: dict[str, Any] = get_state(ctx.engine, ctx.host, "dnsbl") or {}
    after: dict[str, Any] = {}
    changes = []
    errors = 0
    for li in listings:
        k = f"{li.zone.id}|{li.subject}"
        if li.status == "error":
            errors += 1
            if k in before:  # unknown now: keep what we knew
                after[k] = before[k]
            continue
        if li.status == "listed":
            after[k] = sorted(li.answers)
        if (k in before) != (li.status == "listed"):
            changes.append(li)
    for li in changes:
        listed = li.status == "listed"
        meaning = "; ".join(f"{c.list}: {c.meaning}" for c in li.codes)
        ctx.dispatcher.emit(
            from_listing_change(
                zone_id=li.zone.id,
                zone_name=li.zone.name,
                subject=li.subject,
                listed=listed,
                answers=li.answers,
                meaning=meaning,
                url=li.url,
                host=ctx.host,
            )
        )
    with write_transaction(ctx.engine) as conn:
        set_state(conn, ctx.host, "dnsbl", after, now)
        hist = get_state(conn, ctx.host, "dnsbl_changes") or []
        for li in changes:
            hist.append(
                {
                    "ts": now,
                    "zone": li.zone.id,
                    "zone_name": li.zone.name,
                    "subject": li.subject,
                    "listed": li.status == "listed",
                    "answers": list(li.answers),
                    "url": li.url,
                }
            )
        set_state(conn, ctx.host, "dnsbl_changes", hist[-500:], now)
    return {
        "checked": len(listings),
        "listed": len(after),
        "changes": len(changes),
        "errors": errors,
    }


def _is_global(ip: str) -> bool:
    import ipaddress

    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    # documentation ranges stay checkable: tests and examples use them for "our" IPs
    doc = any(
        a in ipaddress.ip_network(n)
        for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
        if a.version == ipaddress.ip_network(n).version
    )
    return a.is_global or doc


def spikes(ctx: JobContext, now: float) -> dict[str, Any]:
    from mailwarden.report.spikes import detect_spikes, spike_alert

    found, skipped = detect_spikes(ctx.engine, ctx.settings.alerts, hosts=ctx.log_hosts(), now=now)
    for s in found:
        ctx.dispatcher.emit(spike_alert(s, now=now, public_url=ctx.settings.service.public_url))
    return {"spikes": len(found), "skipped_hosts": skipped}


def sasl(ctx: JobContext, now: float) -> dict[str, Any]:
    from mailwarden.report.spikes import sasl_alert, sasl_bursts

    found = sasl_bursts(ctx.engine, ctx.settings.alerts, hosts=ctx.log_hosts(), now=now)
    for b in found:
        ctx.dispatcher.emit(sasl_alert(b, window=ctx.settings.alerts.sasl_window))
    return {"bursts": len(found)}


def daily_report(ctx: JobContext, now: float) -> dict[str, Any]:
    from mailwarden.report.alerts import Alert
    from mailwarden.report.daily import build_report, render_html, render_text

    svc = ctx.settings.service
    hosts = sorted(ctx.log_hosts() | {ctx.host})
    doc = build_report(
        ctx.engine,
        since=now - 86400.0,
        until=now,
        hosts=hosts,
        settings=ctx.settings,
    )
    day = time.strftime("%Y-%m-%d", time.localtime(now))
    ctx.dispatcher.emit(
        Alert(
            kind="report",
            key=f"report:{ctx.host}:{day}",
            severity="info",
            title=f"daily report {day}: {doc['summary']['headline']}",
            text=render_text(doc),
            host=ctx.host,
            html=render_html(doc) if svc.daily_report_format == "html" else "",
            data={"since": doc["since"], "until": doc["until"], "hosts": hosts},
        )
    )
    return {"day": day}


# ------------------------------------------------------------------------------------------
# The scheduler
# ------------------------------------------------------------------------------------------


@dataclass
class Job:
    name: str
    fn: Callable[[JobContext, float], dict[str, Any]]
    interval: float = 0.0  # seconds; 0 = off
    at: str = ""  # "HH:MM" local time, once a day (instead of ``interval``)
    last: float = 0.0
    runs: int = 0
    failures: int = 0
    last_result: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False  # no "job done" log event (frequent housekeeping)

    def due(self, now: float) -> bool:
        if self.at:
            hh, mm = (int(x) for x in self.at.split(":"))
            t = dt.datetime.fromtimestamp(now)
            slot = t.replace(hour=hh, minute=mm, second=0, microsecond=0)
            if t < slot:
                slot -= dt.timedelta(days=1)
            return self.last < slot.timestamp()
        return self.interval > 0 and now - self.last >= self.interval


def jobs_from(settings: Settings) -> list[Job]:
    s = settings.service
    out = [
        Job("retention", retention, interval=s.retention_interval),
        Job("dnsbl", dnsbl_check, interval=s.dnsbl_interval),
        Job("spikes", spikes, interval=s.spike_interval),
        Job("sasl", sasl, interval=s.sasl_interval),
    ]
    if s.daily_report:
        hh, _, mm = s.daily_report.partition(":")
        if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
            from mailwarden.errors import ConfigError

            raise ConfigError(f"[service] daily_report {s.daily_report!r}: use HH:MM or ''")
        out.append(Job("daily_report", daily_report, at=f"{int(hh):02d}:{int(mm):02d}"))
    return out


class Scheduler:
    """Runs due jobs one after the other; the run times are kept in ``service_state``."""

    def __init__(self, ctx: JobContext, jobs: list[Job], *, tick: float = 1.0) -> None:
        self.ctx = ctx
        self.jobs = {j.name: j for j in jobs}
        self.tick = tick
        self._loaded = False

    def reconfigure(self, ctx: JobContext, jobs: list[Job]) -> None:
        old = self.jobs
        self.ctx = ctx
        self.jobs = {j.name: j for j in jobs}
        for name, j in self.jobs.items():
            if name in old:
                j.last, j.runs, j.failures = old[name].last, old[name].runs, old[name].failures

    def _load(self) -> None:
        from mailwarden.store.service import get_state

        saved = get_state(self.ctx.engine, self.ctx.host, "jobs") or {}
        for name, j in self.jobs.items():
            if isinstance(saved.get(name), (int, float)):
                j.last = float(saved[name])
        if "daily_report" in self.jobs and not saved.get("daily_report"):
            # first start: the first report is the next scheduled one, not one at once
            self.jobs["daily_report"].last = time.time()
        self._loaded = True

    def _save(self, now: float) -> None:
        from mailwarden.store.db import write_transaction
        from mailwarden.store.service import set_state

        with write_transaction(self.ctx.engine) as conn:
            set_state(conn, self.ctx.host, "jobs", {n: j.last for n, j in self.jobs.items()}, now)

    def run_due(self, now: float | None = None, *, only: str | None = None) -> list[str]:
        """Run every due job (or ``only`` that one, due or not); returns the names run."""
        if not self._loaded:
            self._load()
        ran = []
        for j in list(self.jobs.values()):
            t = time.time() if now is None else now
            if only is not None and j.name != only:
                continue
            if only is None and not j.due(t):
                continue
            started = time.monotonic()
            try:
                j.last_result = j.fn(self.ctx, t)
                j.runs += 1
                if j.quiet:
                    j.last = t
                    continue
                log.info(
                    "job done",
                    extra={
                        "job": j.name,
                        "seconds": round(time.monotonic() - started, 3),
                        **{f"result_{k}": v for k, v in j.last_result.items()},
                    },
                )
            except Exception as exc:
                j.failures += 1
                if j.quiet:
                    log.debug("job failed: %s: %s", j.name, exc)
                else:
                    log.error("job failed", exc_info=True, extra={"job": j.name, "error": str(exc)})
            j.last = t
            ran.append(j.name)
        if ran:
            try:
                self._save(time.time())
            except Exception as exc:
                log.warning("job times not saved", extra={"error": str(exc)[:200]})
        return ran

    def run(self, stop: threading.Event) -> None:
        """The component loop."""
        while not stop.wait(self.tick):
            self.run_due()
