"""The breaker state machine, one :class:`BreakerState` per (provider, sending IP).

Pure logic, no I/O: feed it observations (:meth:`Machine.observe`), the clock (:meth:`Machine.tick`)
and a person's commands (:meth:`Machine.open` / :meth:`Machine.close`); it returns the
:class:`Transition` records that the engine stores, enforces and announces.

::

    closed ──open rule fires──▶ open ──until passes──▶ probing ──a delivery accepted──▶ closed
       │                         ▲  ▲                      │
       │                         │  └─new block: re-open, duration × escalation (capped)
       └──slow rule fires──▶ slowed ──until passes──▶ closed
                                 └──open rule fires──▶ open

* An ``open`` whose rule has ``duration = "manual"`` (or opened by a person without ``--for``)
  has no ``until``: it stays open until a person closes it.
* While open, further block replies (attempts that were already in flight) change nothing, and
  an accepted delivery does not close it either: only a probe that started after the pause may.
* Recipient-level replies and our own deferrals never reach the machine (see
  :meth:`mailwarden.breaker.rules.RuleSet.match`).
* A trip soon after a close (``escalation_memory``) continues the escalation level.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

from mailwarden.breaker.rules import MANUAL, Match, Rule, RuleSet

State = Literal["closed", "open", "probing", "slowed"]
STATES: tuple[State, ...] = ("closed", "open", "probing", "slowed")
Key = tuple[str, str]  # (provider, sending ip or "")


@dataclass(slots=True)
class BreakerState:
    """Where one provider (for one sending IP) stands."""

    provider: str
    ip: str = ""
    state: State = "closed"
    since: float = 0.0
    until: float | None = None  # None: no timer (closed, or open until a person closes it)
    level: int = 0  # escalation level of the current / last open period
    rule: str = ""  # id of the rule that tripped it ("" when a person did)
    reply: str = ""  # the reply that tripped it, one line
    issuer: str = ""  # blocklist issuer named by the reply (affects every receiver using it)
    url: str = ""  # delisting / help URL
    reason: str = ""  # text of the retry: answer while parked
    slow_transport: str = ""  # transport clone while slowed
    actor: str = ""  # "rule", "person", "probe", "timer"
    note: str = ""  # a person's reason text
    probe_round: int = 0  # increments every time probing (re)starts; the socketmap counts per round
    trips: int = 0  # how many times it opened, ever
    closed_at: float | None = None  # when it last closed (for escalation memory)

    @property
    def key(self) -> Key:
        return (self.provider, self.ip)

    @property
    def manual(self) -> bool:
        return self.state == "open" and self.until is None


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as stored in the history and sent to the alert channels."""

    ts: float
    provider: str
    ip: str
    old: State
    new: State
    actor: str  # "rule", "person", "probe", "timer"
    rule: str = ""
    reply: str = ""
    issuer: str = ""
    url: str = ""
    until: float | None = None
    level: int = 0
    note: str = ""

    def summary(self) -> str:
        who = f"{self.provider}" + (f" (ip {self.ip})" if self.ip else "")
        why = f" by rule {self.rule}" if self.actor == "rule" else f" by {self.actor}"
        extra = (
            f"; issuer {self.issuer}: every receiver using that list is affected"
            if (self.issuer)
            else ""
        )
        return f"breaker {who}: {self.old} -> {self.new}{why}{extra}"


@dataclass(slots=True)
class Machine:
    """All breakers plus the trigger windows."""

    rules: RuleSet
    probe_recipients: int = 3  # recipients let through per probe round (the socketmap enforces)
    probe_timeout: float = 600.0  # a probe round with no verdict starts again after this long
    escalation_memory: float = 86400.0
    states: dict[Key, BreakerState] = field(default_factory=dict)
    hits: dict[tuple[str, str, str], deque[float]] = field(default_factory=dict)
    matched: dict[str, int] = field(default_factory=dict)  # rule id -> replies that matched

    def get(self, provider: str, ip: str = "") -> BreakerState:
        st = self.states.get((provider, ip))
        if st is None:
            st = self.states[(provider, ip)] = BreakerState(provider, ip)
        return st

    def load(self, states: list[BreakerState]) -> None:
        """Replace the in-memory states (e.g. with what the store holds)."""
        self.states = {s.key: s for s in states}

    # ---------------------------------------------------------------- observations

    def observe_match(self, ts: float, provider: str, ip: str, m: Match) -> list[Transition]:
        """A reply from ``provider`` matched rule ``m.rule``: count it and maybe change state."""
        rule = m.rule
        self.matched[rule.id] = self.matched.get(rule.id, 0) + 1
        if not self._triggered(ts, provider, ip, rule):
            return []
        st = self.get(provider, ip)
        if rule.action == "open":
            return self._on_block(ts, st, m)
        return self._on_throttle(ts, st, m)

    def observe_success(self, ts: float, provider: str, ip: str = "") -> list[Transition]:
        """A delivery to ``provider`` was accepted. Only a probe closes a breaker."""
        st = self.states.get((provider, ip))
        # Log stamps may have whole seconds only: allow that much before probing began.
        if st is None or st.state != "probing" or ts < st.since - 1.0:
            return []
        return [self._set(ts, st, "closed", "probe", until=None)]

    def _triggered(self, ts: float, provider: str, ip: str, rule: Rule) -> bool:
        if rule.trigger.immediate:
            return True
        q = self.hits.setdefault((provider, ip, rule.id), deque())
        q.append(ts)
        while q and q[0] <= ts - rule.trigger.window:
            q.popleft()
        if len(q) >= rule.trigger.count:
            q.clear()
            return True
        return False

    def _on_block(self, ts: float, st: BreakerState, m: Match) -> list[Transition]:
        rule = m.rule
        if st.state == "open":
            # In-flight attempts answered after the trip. Only a "do not retry" reply changes
            # anything: it pins the breaker open until a person closes it.
            if rule.manual and st.until is not None:
                self._stamp(st, m)
                return [self._set(ts, st, "open", "rule", until=None)]
            return []
        recent = st.closed_at is not None and ts - st.closed_at < self.escalation_memory
        level = st.level + 1 if st.state == "probing" or (recent and st.level) else 1
        dur = rule.duration_for(level)
        st.level = level
        st.trips += 1
        self._stamp(st, m)
        st.slow_transport = ""
        return [self._set(ts, st, "open", "rule", until=None if dur == MANUAL else ts + dur)]

    def _on_throttle(self, ts: float, st: BreakerState, m: Match) -> list[Transition]:
        rule = m.rule
        if st.state == "open":
            return []
        dur = rule.duration_for(1)
        until = ts + dur
        if st.state == "slowed":
            # Still throttled: keep the slow-down going (no transition, no alert storm).
            if st.until is not None and until > st.until:
                st.until = until
            return []
        self._stamp(st, m)
        st.slow_transport = rule.slow.transport if rule.slow else ""
        return [self._set(ts, st, "slowed", "rule", until=until)]

    @staticmethod
    def _stamp(st: BreakerState, m: Match) -> None:
        st.rule = m.rule.id
        st.reply = m.line
        st.issuer = m.issuer
        st.url = m.url
        st.reason = m.rule.reason
        st.note = ""

    # ---------------------------------------------------------------- clock

    def tick(self, now: float) -> list[Transition]:
        """Let timers run: open -> probing, slowed -> closed, stale probing -> new probe round."""
        out: list[Transition] = []
        for st in list(self.states.values()):
            if st.state == "open" and st.until is not None and now >= st.until:
                st.probe_round += 1
                out.append(self._set(now, st, "probing", "timer", until=now + self.probe_timeout))
            elif st.state == "slowed" and st.until is not None and now >= st.until:
                out.append(self._set(now, st, "closed", "timer", until=None))
            elif st.state == "probing" and st.until is not None and now >= st.until:
                # No verdict (the probes were deferred for other reasons): let a few more through.
                st.probe_round += 1
                st.until = now + self.probe_timeout
        return out

    def next_deadline(self) -> float | None:
        """The earliest timer, so a loop knows when to call :meth:`tick` next."""
        times = [s.until for s in self.states.values() if s.until is not None]
        return min(times) if times else None

    # ---------------------------------------------------------------- a person

    def open(
        self,
        now: float,
        provider: str,
        *,
        duration: float | None,
        note: str,
        reason: str,
        ip: str = "",
    ) -> Transition:
        """Open by hand, for ``duration`` seconds or (None) until closed by hand."""
        st = self.get(provider, ip)
        st.rule = ""
        st.reply = ""
        st.issuer = ""
        st.url = ""
        st.note = note
        st.reason = reason
        st.slow_transport = ""
        st.level = max(st.level, 1)
        st.trips += 1
        until = None if duration is None else now + duration
        return self._set(now, st, "open", "person", until=until)

    def close(self, now: float, provider: str, *, note: str = "", ip: str = "") -> Transition:
        """Close by hand (also resets the escalation level)."""
        st = self.get(provider, ip)
        st.note = note
        st.level = 0
        return self._set(now, st, "closed", "person", until=None)

    # ---------------------------------------------------------------- helpers

    def _set(
        self, ts: float, st: BreakerState, new: State, actor: str, *, until: float | None
    ) -> Transition:
        old = st.state
        st.state = new
        st.since = ts
        st.until = until
        st.actor = actor
        if new == "closed":
            st.closed_at = ts
            st.slow_transport = ""
        return Transition(
            ts=ts,
            provider=st.provider,
            ip=st.ip,
            old=old,
            new=new,
            actor=actor,
            rule=st.rule,
            reply=st.reply,
            issuer=st.issuer,
            url=st.url,
            until=until,
            level=st.level,
            note=st.note,
        )

    def snapshot(self) -> list[BreakerState]:
        """Copies of every non-closed state (what enforcement needs)."""
        return [replace(s) for s in self.states.values() if s.state != "closed"]
