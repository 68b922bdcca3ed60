"""Queue safety for parked mail: inventory per provider, expiry guard, probes, paced release.

* :meth:`QueueActuator.inventory`: ``postqueue -j`` grouped by provider (recipient domain ->
  primary MX -> provider, the same path the socketmap takes); a recipient is *parked* when its
  ``delay_reason`` carries the breaker marker, *held* when its queue file is in hold.
* :meth:`QueueActuator.guard_expiry`: parked mail ages like any deferred mail and bounces at
  ``maximal_queue_lifetime``; move it to hold (which never expires) ``hold_margin`` before that.
* :meth:`QueueActuator.kick`: ``postqueue -i`` a few parked messages when a probe round starts,
  so probes do not wait for Postfix's own retry schedule.
* :meth:`QueueActuator.release`: on close, put the provider's parked mail on hold, then let it
  go in batches (``postsuper -H`` + ``postqueue -i``) at a rate the provider accepted before:
  never one big flush.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailwarden.errors import MailwardenError, ValidationError
from mailwarden.postfix import validate
from mailwarden.postfix.control import Postfix, PrivilegeError, QueuedMessage

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def postfix_time(value: str, default_unit: str = "d") -> float:
    """A Postfix time value (``5d``, ``3600s``, ``7``) in seconds."""
    v = value.strip().lower()
    unit = default_unit
    if v and v[-1] in _UNITS:
        v, unit = v[:-1], v[-1]
    try:
        return float(v) * _UNITS[unit]
    except ValueError as exc:
        raise ValidationError(f"bad Postfix time value {value!r}") from exc


@dataclass(slots=True)
class ProviderQueue:
    """What the queue holds for one provider."""

    provider: str
    recipients: int = 0  # every queued recipient for this provider
    parked: int = 0  # deferred by the breaker
    held: int = 0  # in the hold queue
    oldest: float | None = None  # arrival time of the oldest queued message
    queue_ids: set[str] = field(default_factory=set)  # files with a parked or held recipient
    held_ids: set[str] = field(default_factory=set)
    parked_ids: set[str] = field(default_factory=set)
    deferred_ids: set[str] = field(default_factory=set)  # every deferred file of the provider


class QueueActuator:
    """Acts on the queue of one Postfix instance, for the breaker."""

    def __init__(
        self,
        pf: Postfix,
        provider_of_domain: Callable[[str], str],
        *,
        marker: str,
        hold_margin: float = 6 * 3600,
    ) -> None:
        self.pf = pf
        self.provider_of_domain = provider_of_domain
        self.marker = marker
        self.hold_margin = hold_margin
        self._lock = threading.Lock()
        self.released = 0
        self.held_for_expiry = 0

    def _provider(self, address: str) -> str:
        try:
            _, dom = validate.address(address)
        except ValidationError:
            return ""
        try:
            return self.provider_of_domain(dom)
        except Exception:
            log.exception("provider lookup for %s failed", dom)
            return ""

    def inventory(self, messages: list[QueuedMessage] | None = None) -> dict[str, ProviderQueue]:
        """Queued recipients per provider (only providers with parked or held mail, plus all
        providers when ``messages`` were given explicitly)."""
        msgs = self.pf.queue() if messages is None else messages
        out: dict[str, ProviderQueue] = {}
        for m in msgs:
            if m.queue_name not in ("deferred", "hold", "active", "incoming"):
                continue
            for r in m.recipients:
                p = self._provider(r.address)
                if not p:
                    continue
                pq = out.setdefault(p, ProviderQueue(p))
                pq.recipients += 1
                pq.oldest = m.arrival_time if pq.oldest is None else min(pq.oldest, m.arrival_time)
                if m.queue_name == "deferred":
                    pq.deferred_ids.add(m.queue_id)
                if m.queue_name == "hold":
                    pq.held += 1
                    pq.held_ids.add(m.queue_id)
                    pq.queue_ids.add(m.queue_id)
                elif self.marker in r.delay_reason:
                    pq.parked += 1
                    pq.parked_ids.add(m.queue_id)
                    pq.queue_ids.add(m.queue_id)
        return out

    # ------------------------------------------------------------------------- expiry

    def lifetime(self) -> float:
        return postfix_time(self.pf.get_expanded("maximal_queue_lifetime") or "5d")

    def guard_expiry(self, now: float | None = None) -> list[str]:
        """Hold parked messages that would otherwise expire within ``hold_margin``."""
        now = time.time() if now is None else now
        limit = self.lifetime()
        doomed = []
        for m in self.pf.queue():
            if m.queue_name != "deferred":
                continue
            if now < m.arrival_time + limit - self.hold_margin:
                continue
            if any(self.marker in r.delay_reason for r in m.recipients):
                doomed.append(m.queue_id)
        if doomed:
            with self._lock:
                self.pf.hold(doomed)
            self.held_for_expiry += len(doomed)
            log.warning(
                "held %d parked messages that would have expired (maximal_queue_lifetime %s)",
                len(doomed),
                self.pf.get("maximal_queue_lifetime"),
            )
        return doomed

    # ------------------------------------------------------------------------- probes

    def kick(self, provider: str, count: int) -> list[str]:
        """Schedule up to ``count`` parked messages of ``provider`` now (probe round)."""
        pq = self.inventory().get(provider)
        if pq is None:
            return []
        ids = sorted(pq.parked_ids)[:count]
        self._deliver(ids)
        return ids

    # ------------------------------------------------------------------------- release

    def release(
        self,
        provider: str,
        *,
        rate_per_minute: float,
        still_closed: Callable[[], bool] = lambda: True,
        sleep: Callable[[float], None] = time.sleep,
        batch_seconds: float = 2.0,
    ) -> int:
        """Release the provider's parked and held mail, paced; returns recipients released.

        First everything parked goes on hold (so Postfix's own retry schedule cannot flush it
        all at once), then batches leave hold and are scheduled, ``rate_per_minute`` recipients
        per minute. Stops early if ``still_closed()`` turns False (the provider blocked again).
        """
        pq = self.inventory().get(provider)
        if pq is None or not pq.queue_ids:
            return 0
        with self._lock:
            if pq.parked_ids:
                self.pf.hold(sorted(pq.parked_ids))
        counts = self._recipients_per_id(provider)
        per_batch = max(1.0, rate_per_minute * batch_seconds / 60.0)
        ids = sorted(counts)
        done = 0
        i = 0
        while i < len(ids):
            if not still_closed():
                log.info("release of %s stopped: the breaker is no longer closed", provider)
                break
            batch: list[str] = []
            n = 0
            while i < len(ids) and (not batch or n + counts[ids[i]] <= per_batch):
                batch.append(ids[i])
                n += counts[ids[i]]
                i += 1
            with self._lock:
                self.pf.release(batch)
                self._deliver(batch)
            done += n
            self.released += n
            if i < len(ids):
                sleep(60.0 * n / rate_per_minute)
        if done:
            self.sweep(provider, still_closed=still_closed, sleep=sleep)
        return done

    def sweep(
        self,
        provider: str,
        *,
        still_closed: Callable[[], bool] = lambda: True,
        sleep: Callable[[float], None] = time.sleep,
        rounds: int = 6,
        wait: float = 3.0,
    ) -> int:
        """After a release: nudge the provider's mail that is still waiting.

        Deferred files are scheduled again (``postqueue -i``; a file released from hold keeps
        its old retry time), held ones released, and the queue manager is told to scan the
        incoming queue (files moved there while it restarted wait for a trigger). Returns the
        recipients still queued at the end.
        """
        left = 0
        for r in range(rounds):
            sleep(wait * (r + 1))
            if not still_closed():
                return left
            pq = self.inventory().get(provider)
            left = pq.recipients if pq else 0
            if pq is None or not left:
                return 0
            with self._lock:
                if pq.held_ids:
                    self.pf.release(sorted(pq.held_ids))
                self._deliver(sorted(pq.deferred_ids | pq.held_ids))
                self.pf.kick_incoming()
        return left

    def _deliver(self, qids: list[str]) -> None:
        """``postqueue -i`` each file: a failure (the file may be gone by now) is logged and
        the others go on; a missing privilege stops it."""
        for qid in qids:
            try:
                self.pf.deliver(qid)
            except PrivilegeError:
                raise
            except MailwardenError as exc:
                log.debug("postqueue -i %s: %s", qid, exc)

    def _recipients_per_id(self, provider: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.pf.queue():
            if m.queue_name != "hold":
                continue
            n = sum(1 for r in m.recipients if self._provider(r.address) == provider)
            if n:
                out[m.queue_id] = n
        return out
