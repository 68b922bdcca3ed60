"""The breaker engine: delivery events in, state changes stored, enforced and announced.

For every :class:`~mailwarden.events.Delivery` the engine finds the provider of the relay (the
MX that answered; ``classify.Classifier.provider_for_host``), classifies the reply, matches the
rules and feeds the :class:`~mailwarden.breaker.machine.Machine`. Accepted deliveries reach the
machine too (a probe that gets through closes the breaker). Each transition is

1. stored (state and history, :mod:`mailwarden.store.breaker`), so it survives restarts and the
   CLI and dashboard see it;
2. published as the socketmap's enforcement view (``publisher``; the CLI wires
   :func:`mailwarden.postfix.socketmap.write_view`: the breaker never imports an actuator);
3. acted on through :class:`Hooks` (``postfix reload`` on open, probes kicked, paced release on
   close; see :mod:`mailwarden.postfix.queue`);
4. sent to the alert channels (:mod:`mailwarden.breaker.notify`).

Without a store, view, hooks or channels (``replay``) the engine is a pure simulation.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mailwarden.breaker.machine import BreakerState, Machine, Transition
from mailwarden.breaker.rules import Match, RuleSet
from mailwarden.events import Classification, Delivery, Reply

log = logging.getLogger("mailwarden.breaker")

#: The enhanced status code of our retry: answers.
PARK_CODE = "4.7.1"


class ClassifierLike(Protocol):
    """What the engine needs from :class:`mailwarden.classify.Classifier`."""

    breaker_marker: str

    def provider_for_host(self, host: str, ip: str = "") -> str: ...

    def classify(
        self,
        reply: Reply | None,
        *,
        dsn: str = "",
        status: str = "",
        text: str = "",
        provider: str = "",
    ) -> Classification: ...


class Hooks(Protocol):
    """Actions on the MTA when a breaker changes (the Postfix actuator implements them)."""

    def opened(self, provider: str, *, first: bool = True) -> None: ...

    def probing(self, provider: str, recipients: int) -> None: ...

    def closed(self, provider: str, rate_per_minute: float) -> None: ...


class StoreLike(Protocol):
    def load_states(self) -> list[dict[str, Any]]: ...

    def version(self) -> tuple[int, float]: ...

    def save(
        self, states: Iterable[dict[str, Any]], transitions: Iterable[dict[str, Any]], now: float
    ) -> None: ...

    def add_hit(self, ts: float, provider: str, ip: str, rule: str) -> None: ...

    def hits_since(self, since: float) -> list[tuple[float, str, str, str]]: ...


def is_delivery_agent(program: str) -> bool:
    """``postfix/smtp``, ``postfix-out/smtp``, ``postfix/mwslow10s1/smtp``, ``postfix/lmtp``."""
    last = program.rpartition("/")[2]
    return last in ("smtp", "lmtp")


@dataclass(slots=True)
class Observed:
    """What one delivery meant to the breaker (for replay and debugging)."""

    provider: str
    match: Match | None
    transitions: list[Transition]


@dataclass(slots=True)
class Engine:
    rules: RuleSet
    classifier: ClassifierLike
    machine: Machine
    store: StoreLike | None = None
    publisher: Callable[[dict[str, dict[str, Any]], list[str]], None] | None = None
    hooks: Hooks | None = None
    notify: Callable[[list[Transition]], None] | None = None
    enabled: bool = True
    never_park: list[str] = field(default_factory=list)
    installed_clones: Callable[[], set[str]] = field(default=lambda: set())
    our_ips: frozenset[str] = frozenset()  # several sending IPs: breakers keyed per IP
    release_min_rate: float = 30.0
    release_rate: float = 0.0
    _version: tuple[int, float] | None = None
    _sent: dict[str, deque[float]] = field(default_factory=dict)
    _rate_at_trip: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ state sync

    def load(self, now: float | None = None) -> None:
        """Take the stored states (and the hits inside the longest trigger window)."""
        if self.store is None:
            return
        self.machine.load([BreakerState(**row) for row in self.store.load_states()])
        self._version = self.store.version()
        windows = [r.trigger.window for r in self.rules.rules if not r.trigger.immediate]
        if windows:
            since = (time.time() if now is None else now) - max(windows)
            for ts, prov, ip, rule in self.store.hits_since(since):
                self.machine.hits.setdefault((prov, ip, rule), deque()).append(ts)

    def refresh(self) -> bool:
        """Reload when another process (the CLI) changed the stored states."""
        if self.store is None:
            return False
        v = self.store.version()
        if v == self._version:
            return False
        self.machine.load([BreakerState(**row) for row in self.store.load_states()])
        self._version = v
        self.publish()
        return True

    # ------------------------------------------------------------------ events

    def provider_of(self, d: Delivery) -> str:
        host = d.relay_host or (d.reply.host if d.reply else "")
        ip = d.relay_ip or (d.reply.ip if d.reply else "")
        if not host and not ip:
            return ""
        try:
            return self.classifier.provider_for_host(host, ip)
        except Exception:
            log.exception("provider_for_host(%r) failed", host)
            return ""

    def observe(self, d: Delivery) -> Observed | None:
        """Feed one delivery attempt; returns what it did (None when it was not for us)."""
        if not is_delivery_agent(d.program):
            return None  # error(8)/retry: our own or Postfix's deferrals, never a reply
        provider = self.provider_of(d)
        if not provider:
            return None
        if d.status == "sent":
            self._sent.setdefault(provider, deque()).append(d.ts)
            trs: list[Transition] = []
            for key in [k for k in self.machine.states if k[0] == provider]:
                trs += self.machine.observe_success(d.ts, provider, key[1])
            self._after(trs, d.ts)
            return Observed(provider, None, trs)
        if d.reply is None:
            return Observed(provider, None, [])
        try:
            cls = self.classifier.classify(d.reply, dsn=d.dsn, status=d.status, provider=provider)
        except Exception:
            log.exception("classify failed for %r", d.reply.raw[:200])
            cls = None
        m = self.rules.match(provider, d.reply, cls)
        if m is None:
            return Observed(provider, None, [])
        ip = ""
        if self.our_ips and cls is not None and cls.cited_ip in self.our_ips:
            ip = cls.cited_ip
        if not m.rule.trigger.immediate and self.store is not None:
            self.store.add_hit(d.ts, provider, ip, m.rule.id)
        trs = self.machine.observe_match(d.ts, provider, ip, m)
        self._after(trs, d.ts)
        return Observed(provider, m, trs)

    def tick(self, now: float) -> list[Transition]:
        trs = self.machine.tick(now)
        self._after(trs, now)
        return trs

    # ------------------------------------------------------------------ a person

    def open(
        self, provider: str, *, duration: float | None, note: str, now: float | None = None
    ) -> Transition:
        now = time.time() if now is None else now
        t = self.machine.open(
            now, provider, duration=duration, note=note, reason=note or "opened by hand"
        )
        self._after([t], now)
        return t

    def close(self, provider: str, *, note: str = "", now: float | None = None) -> list[Transition]:
        now = time.time() if now is None else now
        keys = [
            k for k, s in self.machine.states.items() if k[0] == provider and s.state != "closed"
        ]
        trs = [self.machine.close(now, provider, note=note, ip=ip) for _, ip in keys]
        self._after(trs, now)
        return trs

    # ------------------------------------------------------------------ effects

    def _after(self, trs: list[Transition], now: float) -> None:
        if not trs:
            return
        for t in trs:
            if t.new == "open" and t.old != "open":
                self._rate_at_trip[t.provider] = self.learned_rate(t.provider, now)
        if self.store is not None:
            keys = {(t.provider, t.ip) for t in trs}
            self.store.save(
                [asdict(self.machine.states[k]) for k in keys],
                [asdict(t) for t in trs],
                time.time(),
            )
            self._version = self.store.version()
        self.publish()
        if self.hooks is not None and self.enabled:
            for t in trs:
                try:
                    if t.new == "open" and t.old != "open":
                        self.hooks.opened(t.provider, first=t.old in ("closed", "slowed"))
                    elif t.new == "probing":
                        self.hooks.probing(t.provider, self.machine.probe_recipients)
                    elif t.new == "closed" and t.old in ("open", "probing"):
                        self.hooks.closed(t.provider, self.release_rate_for(t.provider))
                except Exception:
                    log.exception("acting on %s failed", t.summary())
        if self.notify is not None:
            self.notify(trs)

    def learned_rate(self, provider: str, now: float) -> float:
        """Deliveries per minute the provider accepted in the hour before ``now``."""
        q = self._sent.get(provider)
        if not q:
            return 0.0
        while q and q[0] < now - 3600:
            q.popleft()
        if not q:
            return 0.0
        span = max(60.0, now - q[0])
        return len(q) * 60.0 / span

    def release_rate_for(self, provider: str) -> float:
        if self.release_rate > 0:
            return self.release_rate
        return max(self.release_min_rate, self._rate_at_trip.get(provider, 0.0))

    # ------------------------------------------------------------------ enforcement view

    def view(self) -> dict[str, dict[str, Any]]:
        """What the socketmap must do, per provider."""
        if not self.enabled:
            return {}
        marker = getattr(self.classifier, "breaker_marker", "circuit open for provider")
        by_provider: dict[str, list[BreakerState]] = {}
        for s in self.machine.states.values():
            by_provider.setdefault(s.provider, []).append(s)
        out: dict[str, dict[str, Any]] = {}
        clones: set[str] | None = None
        for provider, states in sorted(by_provider.items()):
            st = self._effective(states)
            if st is None or st.state == "closed":
                continue
            if st.state == "slowed":
                if clones is None:
                    clones = self.installed_clones()
                if st.slow_transport and st.slow_transport in clones:
                    out[provider] = {"state": "slowed", "transport": st.slow_transport}
                continue
            reason = f"{marker} {provider}: {st.reason or 'opened'}"
            out[provider] = {
                "state": st.state,
                "code": PARK_CODE,
                "reason": reason,
                "probe_round": st.probe_round,
                "probe_recipients": self.machine.probe_recipients,
            }
        return out

    def _effective(self, states: list[BreakerState]) -> BreakerState | None:
        """The state to enforce for a provider: its IP-independent breaker, or the mildest
        per-IP one when every sending IP has one (mail still leaves through the others)."""
        rank = {"closed": 0, "slowed": 1, "probing": 2, "open": 3}
        whole = [s for s in states if s.ip == ""]
        per_ip = {s.ip: s for s in states if s.ip}
        candidates = list(whole)
        if self.our_ips and set(per_ip) >= self.our_ips:
            candidates.append(min(per_ip.values(), key=lambda s: rank[s.state]))
        if not candidates:
            return None
        return max(candidates, key=lambda s: rank[s.state])

    def publish(self) -> None:
        if self.publisher is None:
            return
        try:
            self.publisher(self.view(), self.never_park)
        except Exception:
            log.exception("could not publish the enforcement view")
