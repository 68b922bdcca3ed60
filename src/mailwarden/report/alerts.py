"""One alert model and one dispatcher for everything mailwarden warns about.

Producers only *emit* an :class:`Alert`: breaker transitions (:func:`from_transition`), egress
alerts of the recorder (:func:`from_egress`), new or cleared blocklist listings
(:func:`from_listing_change`), per-origin spikes and SASL failure bursts (:mod:`.spikes`), the
daily report (:mod:`.daily`). The :class:`Dispatcher` then, from its own thread:

1. stores the alert (table ``alerts``, tagged with the host) so reports and the dashboard see
   every one, sent or not;
2. for each channel (:mod:`.channels`: mail, webhook, syslog, log) decides: *duplicate* (an
   alert with the same ``key`` went out on that channel within ``[alerts] dedup_window``),
   *rate-limited* (the channel sent ``[alerts] rate_per_hour`` alerts in the last hour), below
   ``[alerts] min_severity`` (stored only), or *send*; the decision is stored
   (``alert_deliveries``), so dedup and rate limits survive restarts and are shared by a fleet's
   hosts for the same key;
3. sends, never raising: a failing channel is recorded as ``failed`` and logged.

If the store itself is down the alert is still sent (dedup then falls back to memory): an
alert matters most when things break.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from mailwarden.breaker.machine import Transition

log = logging.getLogger("mailwarden.alerts")

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a person should know. ``key`` identifies "the same alert" for dedup."""

    kind: str  # breaker, dnsbl, egress, spike, sasl, report, service
    key: str
    severity: str  # info, warning, critical
    title: str
    text: str = ""
    ts: float = field(default_factory=time.time)
    host: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()  # (label, URL)
    html: str = ""  # a rich body (the daily report); channels fall back to ``text``
    dedup: bool = True  # False: every emission is sent (still rate limited)

    def rank(self) -> int:
        return SEVERITIES.index(self.severity) if self.severity in SEVERITIES else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "ts": self.ts,
            "host": self.host,
            "data": self.data,
            "links": [{"label": a, "url": b} for a, b in self.links],
        }


class Channel(Protocol):
    """One way out. ``send`` raises on failure (the dispatcher records and logs it)."""

    name: str

    def send(self, alert: Alert) -> None: ...


# ------------------------------------------------------------------------------------------
# Producers: turn the other stages' records into alerts
# ------------------------------------------------------------------------------------------


def from_transition(t: Transition, *, host: str = "", public_url: str = "") -> Alert:
    """A breaker transition (see :mod:`mailwarden.breaker.machine`)."""
    from dataclasses import asdict

    from mailwarden.breaker.notify import describe

    severity = {"open": "critical", "slowed": "warning"}.get(t.new, "info")
    links: list[tuple[str, str]] = []
    if t.url:
        links.append(("delisting / more", t.url))
    if public_url:
        links.append(("dashboard", f"{public_url.rstrip('/')}/breaker"))
    who = t.provider + (f" ({t.ip})" if t.ip else "") + (f" on {host}" if host else "")
    return Alert(
        kind="breaker",
        # every transition is news; dedup only absorbs the same transition announced twice (the
        # host is part of it: in a fleet each host's breaker for a provider is its own)
        key=f"breaker:{host}:{t.provider}:{t.ip}:{t.old}>{t.new}:{int(t.ts)}",
        severity=severity,
        title=f"{who}: breaker {t.old} -> {t.new}",
        text=describe(t),
        ts=t.ts,
        host=host,
        data=asdict(t),
        links=tuple(links),
    )


def from_egress(a: Any, *, host: str = "", public_url: str = "") -> Alert:
    """An alert of :class:`mailwarden.egress.summary.Recorder` (non-MTA SMTP egress)."""
    d = a.as_dict()
    who = a.script or a.exe or a.unit or "?"
    links = (("dashboard", f"{public_url.rstrip('/')}/egress"),) if public_url else ()
    return Alert(
        kind="egress",
        key=f"egress:{host}:{a.uid}:{who}:{a.port}",
        severity="critical" if not a.blocked else "warning",
        title=f"{a.user or a.uid} ({who}) connected to remote SMTP port {a.port}"
        + (f" on {host}" if host else ""),
        text=a.text(),
        ts=a.raised_at,
        host=host,
        data=d,
        links=links,
    )


def from_listing_change(
    *,
    zone_id: str,
    zone_name: str,
    subject: str,
    listed: bool,
    answers: Sequence[str] = (),
    meaning: str = "",
    url: str = "",
    host: str = "",
) -> Alert:
    """A subject (our IP or domain) newly listed on, or removed from, a blocklist."""
    state = "listed" if listed else "delisted"
    text = (
        f"{subject} is now listed on {zone_name}"
        + (f" ({', '.join(answers)}: {meaning})" if answers or meaning else "")
        + ". Receivers using this list refuse or junk our mail until we are delisted."
        if listed
        else f"{subject} is no longer listed on {zone_name}."
    )
    return Alert(
        kind="dnsbl",
        key=f"dnsbl:{zone_id}:{subject}:{state}",
        severity="critical" if listed else "info",
        title=f"{subject} listed on {zone_name}"
        if listed
        else f"{subject} delisted from {zone_name}",
        text=text,
        host=host,
        data={
            "zone": zone_id,
            "subject": subject,
            "listed": listed,
            "answers": list(answers),
            "meaning": meaning,
        },
        links=(("lookup / delisting", url),) if url else (),
    )


# ------------------------------------------------------------------------------------------
# The dispatcher
# ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class DispatchStats:
    emitted: int = 0
    sent: int = 0
    failed: int = 0
    duplicates: int = 0
    rate_limited: int = 0
    below_threshold: int = 0
    dropped: int = 0
    store_errors: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    """Store, deduplicate, rate-limit and fan alerts out to the channels (module doc)."""

    def __init__(
        self,
        channels: Iterable[Channel],
        *,
        engine: Engine | None = None,
        host: str = "",
        dedup_window: float = 3600.0,
        rate_per_hour: int = 30,
        min_severity: str = "warning",
    ) -> None:
        self.channels = list(channels)
        self.engine = engine
        self.host = host
        self.dedup_window = dedup_window
        self.rate_per_hour = rate_per_hour
        self.min_severity = min_severity
        self.stats = DispatchStats()
        self._q: queue.Queue[Alert | None] = queue.Queue(maxsize=10_000)
        self._mem_sent: dict[tuple[str, str], float] = {}  # (channel, key) -> ts (store down)
        self._mem_rate: dict[str, list[float]] = {}
        self._thread: threading.Thread | None = None
        self._busy = 0
        self._lock = threading.Lock()

    def configure(
        self,
        channels: Iterable[Channel],
        *,
        dedup_window: float,
        rate_per_hour: int,
        min_severity: str,
    ) -> None:
        """Swap channels and limits (SIGHUP); queued alerts go to the new channels."""
        with self._lock:
            self.channels = list(channels)
            self.dedup_window = dedup_window
            self.rate_per_hour = rate_per_hour
            self.min_severity = min_severity

    # -- producers' side ------------------------------------------------------------------
    def emit(self, alert: Alert) -> None:
        """Queue an alert; never blocks, never raises."""
        if not alert.host and self.host:
            from dataclasses import replace

            alert = replace(alert, host=self.host)
        self.stats.emitted += 1
        with self._lock:
            self._busy += 1
        try:
            self._q.put_nowait(alert)
        except queue.Full:
            with self._lock:
                self._busy -= 1
            self.stats.dropped += 1
            log.error("alert queue full; dropped", extra={"key": alert.key})
            return
        if self._thread is None:
            self.start()

    def transitions(self, trs: Iterable[Transition], public_url: str = "") -> None:
        """The breaker engine's ``notify`` hook."""
        for t in trs:
            self.emit(from_transition(t, host=self.host, public_url=public_url))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            a = self._q.get()
            if a is None:
                return
            try:
                self.deliver(a)
            except Exception:
                log.exception("alert dispatch failed")
            finally:
                with self._lock:
                    self._busy -= 1

    def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._busy == 0:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the thread."""
        if self._thread is None:
            return
        self.wait_idle(timeout)
        self._q.put(None)
        self._thread.join(timeout)
        self._thread = None

    # -- the decision ------------------------------------------------------------------------
    def deliver(self, a: Alert) -> dict[str, str]:
        """Store ``a`` and send it where due (synchronously); returns channel -> status."""
        with self._lock:
            channels = list(self.channels)
            window, rate, floor = self.dedup_window, self.rate_per_hour, self.min_severity
        now = time.time()
        decisions: dict[str, str] = {}
        alert_id: int | None = None
        conn_ok = self.engine is not None
        if self.engine is not None:
            try:
                alert_id, decisions = self._decide_stored(a, channels, now, window, rate, floor)
            except Exception as exc:
                conn_ok = False
                self.stats.store_errors += 1
                log.warning("alert not stored (store down?)", extra={"error": str(exc)[:200]})
        if not conn_ok:
            decisions = {
                ch.name: self._decide_memory(a, ch.name, now, window, rate, floor)
                for ch in channels
            }
        results: dict[str, str] = {}
        errors: dict[str, str] = {}
        for ch in channels:
            d = decisions.get(ch.name, "send")
            if d != "send":
                results[ch.name] = d
                if d == "duplicate":
                    self.stats.duplicates += 1
                elif d == "rate-limited":
                    self.stats.rate_limited += 1
                else:
                    self.stats.below_threshold += 1
                continue
            try:
                ch.send(a)
            except Exception as exc:
                results[ch.name] = "failed"
                errors[ch.name] = f"{type(exc).__name__}: {exc}"[:500]
                self.stats.failed += 1
                log.warning(
                    "alert channel failed",
                    extra={"channel": ch.name, "key": a.key, "error": errors[ch.name]},
                )
                continue
            results[ch.name] = "sent"
            self.stats.sent += 1
            self.stats.by_channel[ch.name] = self.stats.by_channel.get(ch.name, 0) + 1
            self._mem_sent[(ch.name, a.key)] = now
            self._mem_rate.setdefault(ch.name, []).append(now)
        if alert_id is not None and self.engine is not None:
            try:
                self._record(alert_id, a, results, errors, now)
            except Exception as exc:
                self.stats.store_errors += 1
                log.warning("alert deliveries not stored", extra={"error": str(exc)[:200]})
        return results

    def _decide_memory(
        self, a: Alert, ch: str, now: float, window: float, rate: int, floor: str
    ) -> str:
        def over_rate() -> bool:
            recent = [t for t in self._mem_rate.get(ch, []) if t > now - 3600]
            self._mem_rate[ch] = recent
            return len(recent) >= rate

        return _verdict(
            a, floor, now, window, last=lambda: self._mem_sent.get((ch, a.key)), over_rate=over_rate
        )

    def _decide_stored(
        self,
        a: Alert,
        channels: list[Channel],
        now: float,
        window: float,
        rate: int,
        floor: str,
    ) -> tuple[int, dict[str, str]]:
        from mailwarden.store.db import write_transaction
        from mailwarden.store.service import add_alert, last_sent, sent_since

        assert self.engine is not None
        out: dict[str, str] = {}
        with write_transaction(self.engine) as conn:
            aid = add_alert(
                conn,
                {
                    "ts": a.ts,
                    "host": a.host or self.host,
                    "kind": a.kind,
                    "key": a.key,
                    "severity": a.severity,
                    "title": a.title[:1000],
                    "text": a.text[:20_000],
                    "data": a.data,
                },
            )

            def over_rate(channel: str) -> bool:
                return sent_since(conn, channel, now - 3600) >= rate

            for ch in channels:
                out[ch.name] = _verdict(
                    a,
                    floor,
                    now,
                    window,
                    last=partial(last_sent, conn, ch.name, a.key),
                    over_rate=partial(over_rate, ch.name),
                )
        return aid, out

    def _record(
        self, aid: int, a: Alert, results: dict[str, str], errors: dict[str, str], now: float
    ) -> None:
        from mailwarden.store.db import write_transaction
        from mailwarden.store.service import add_deliveries

        assert self.engine is not None
        with write_transaction(self.engine) as conn:
            add_deliveries(
                conn,
                [
                    {
                        "alert_id": aid,
                        "host": a.host or self.host,
                        "channel": ch,
                        "key": a.key,
                        "ts": now,
                        "status": st,
                        "error": errors.get(ch, ""),
                    }
                    for ch, st in results.items()
                ],
            )


def _verdict(
    a: Alert,
    floor: str,
    now: float,
    window: float,
    *,
    last: Callable[[], float | None],
    over_rate: Callable[[], bool],
) -> str:
    """What to do with ``a`` on one channel: below-threshold, duplicate (``last``: when the
    channel last sent its key), rate-limited or send. Reports pass the floor and the rate
    limit; ``last`` and ``over_rate`` are only asked when needed."""
    if a.rank() < SEVERITIES.index(floor) and a.kind != "report":
        return "below-threshold"
    if a.dedup and (sent := last()) is not None and now - sent < window:
        return "duplicate"
    if a.kind != "report" and over_rate():
        return "rate-limited"
    return "send"


class EgressAdapter:
    """What :class:`mailwarden.egress.summary.Recorder` calls (``notify``): re-emits its alerts
    through the one dispatcher."""

    def __init__(self, dispatcher: Dispatcher, public_url: str = "") -> None:
        self.dispatcher = dispatcher
        self.public_url = public_url

    def notify(self, alert: Any) -> None:
        host = getattr(alert, "host", "") or self.dispatcher.host
        self.dispatcher.emit(from_egress(alert, host=host, public_url=self.public_url))


def dispatcher_from_settings(
    settings: Any, engine: Engine | None = None, host: str = ""
) -> Dispatcher:
    """The dispatcher the configuration asks for (``[alerts]`` channels and limits), started.
    What ``mailwarden run`` uses, and the CLI commands that change state (``breaker open/close``,
    ``egress ingest``) too, so every alert takes the same way out. Close it (``close()``) before
    a short-lived command exits: queued alerts are delivered then."""
    from mailwarden.report.channels import build_channels

    al = settings.alerts
    d = Dispatcher(
        build_channels(settings),
        engine=engine,
        host=host,
        dedup_window=al.dedup_window,
        rate_per_hour=al.rate_per_hour,
        min_severity=al.min_severity,
    )
    d.start()
    return d
