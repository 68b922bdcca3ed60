"""Streaming correlation: Postfix events in, one :class:`~mailwarden.events.Message` per queue
file out.

A message is keyed by ``(host, queue id)`` and starts at its first line (its ``arrival``).
Queue ids are reused by Postfix, so an arrival line (pickup ``uid=`` / smtpd ``client=``) for
a key whose message has already progressed starts a *new* message (the old one is emitted as
incomplete); ``removed`` completes and emits a message.

Memory stays bounded on endless logs: messages idle for longer than ``horizon`` seconds of log
time are emitted as incomplete, and at most ``max_open`` messages are kept (least recently
touched first out). Messages whose arrival was before the start of the log still yield their
delivery attempts, with origin ``unknown``.

Bounce notifications: ``QID: sender non-delivery notification: NEWQID`` adds a
:class:`~mailwarden.events.BounceNotice` to the original and sets ``bounce_of = QID`` on the
notification message NEWQID (whether its lines come before or after the notice line). When
lines are sharded by queue id over several correlators (see :func:`mailwarden.sources.qid_of`),
the two may land in different shards: the original's ``notices`` still name NEWQID, so the
consumer can link them (see :func:`link_bounces`).
"""

from __future__ import annotations

import pwd
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from mailwarden.events import (
    Arrival,
    BounceNotice,
    Delivery,
    Expired,
    Held,
    InboundReject,
    Message,
    MessageIdSeen,
    PostfixEvent,
    QueueActive,
    Removed,
)

DEFAULT_HORIZON = 7 * 86400.0
DEFAULT_MAX_OPEN = 200_000
_NOTHING: tuple[Message, ...] = ()


class Correlator:
    """Fold Postfix events into :class:`Message` records, in log order.

    ``feed(event)`` returns the messages finished by that event (usually none);
    ``flush()`` returns every message still open, as incomplete. Counters: ``emitted``,
    ``evicted_idle``, ``evicted_full``, ``reused`` (queue id reused before ``removed``).
    """

    def __init__(
        self,
        *,
        horizon: float = DEFAULT_HORIZON,
        max_open: int = DEFAULT_MAX_OPEN,
        resolve_users: bool = True,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be >= 1")
        self.horizon = horizon
        self.max_open = max_open
        self.resolve_users = resolve_users
        # (host, qid) -> [message, last log time it was touched]; LRU order
        self._open: OrderedDict[tuple[str, str], list[object]] = OrderedDict()
        # (host, notification qid) -> original qid, for notices seen before the notification
        self._bounce_of: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._users: dict[int, str] = {}
        self.now = 0.0  # latest log time seen
        self._next_sweep = 0.0
        self.emitted = 0
        self.evicted_idle = 0
        self.evicted_full = 0
        self.reused = 0

    def __len__(self) -> int:
        return len(self._open)

    # -- helpers ---------------------------------------------------------------------------
    def user_name(self, uid: int) -> str:
        """Local user name of ``uid`` via pwd, "" when it cannot be resolved (cached)."""
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError):
                name = ""
            if len(self._users) < 100_000:
                self._users[uid] = name
        return name

    def _start(
        self, host: str, qid: str, ts: float, out: list[Message] | None
    ) -> tuple[Message, list[Message] | None]:
        m = Message(host=host, qid=qid, arrival=ts)
        orig = self._bounce_of.pop((host, qid), None)
        if orig is not None:
            m.bounce_of = orig
        self._open[(host, qid)] = [m, ts]
        if len(self._open) > self.max_open:
            _, (old, _last) = self._open.popitem(last=False)  # type: ignore[misc]
            self.evicted_full += 1
            out = self._emit(old, out)  # type: ignore[arg-type]
        return m, out

    def _emit(self, m: Message, out: list[Message] | None) -> list[Message]:
        self.emitted += 1
        if out is None:
            out = []
        out.append(m)
        return out

    def _sweep(self, out: list[Message] | None) -> list[Message] | None:
        limit = self.now - self.horizon
        od = self._open
        while od:
            key, slot = next(iter(od.items()))
            if slot[1] >= limit:  # type: ignore[operator]
                break
            del od[key]
            self.evicted_idle += 1
            out = self._emit(slot[0], out)  # type: ignore[arg-type]
        self._next_sweep = self.now + min(self.horizon / 10.0, 600.0)
        return out

    @staticmethod
    def _started(m: Message) -> bool:
        return bool(
            m.origin_kind != "unknown"
            or m.attempts
            or m.nrcpt is not None
            or m.removed_at is not None
        )

    # -- the one entry point ------------------------------------------------------------
    def feed(self, ev: PostfixEvent) -> tuple[Message, ...] | list[Message]:
        """Take one event; return the messages it finished (often an empty tuple)."""
        out: list[Message] | None = None
        ts = ev.ts
        if ts > self.now:
            self.now = ts
            if ts >= self._next_sweep:
                out = self._sweep(out)
        qid = ev.qid
        if not qid:
            return out or _NOTHING
        host = ev.host
        key = (host, qid)
        slot = self._open.get(key)
        cls = ev.__class__
        if cls is Arrival:
            assert isinstance(ev, Arrival)
            if slot is not None and self._started(slot[0]):  # type: ignore[arg-type]
                del self._open[key]
                self.reused += 1
                out = self._emit(slot[0], out)  # type: ignore[arg-type]
                slot = None
            if slot is None:
                m, out = self._start(host, qid, ts, out)
            else:
                m = slot[0]  # type: ignore[assignment]
                slot[1] = ts
                self._open.move_to_end(key)
            self._arrival(m, ev)
            return out or _NOTHING
        if slot is None:
            if cls is Removed:  # nothing known about it: nothing to emit
                return out or _NOTHING
            m, out = self._start(host, qid, ts, out)
        else:
            m = slot[0]  # type: ignore[assignment]
            slot[1] = ts
            self._open.move_to_end(key)
        if cls is Delivery:
            m.attempts.append(ev)  # type: ignore[arg-type]
        elif cls is QueueActive:
            assert isinstance(ev, QueueActive)
            if not m.sender:
                m.sender = ev.sender
            m.size = ev.size
            m.nrcpt = ev.nrcpt
        elif cls is MessageIdSeen:
            assert isinstance(ev, MessageIdSeen)
            if not ev.resent or not m.message_id:
                m.message_id = ev.message_id
        elif cls is Removed:
            m.removed_at = ts
            m.complete = True
            del self._open[key]
            out = self._emit(m, out)
        elif cls is BounceNotice:
            assert isinstance(ev, BounceNotice)
            m.notices.append(ev)
            nkey = (host, ev.notice_qid)
            nslot = self._open.get(nkey)
            if nslot is not None:
                nslot[0].bounce_of = qid  # type: ignore[attr-defined]
            else:
                self._bounce_of[nkey] = qid
                if len(self._bounce_of) > 100_000:
                    self._bounce_of.popitem(last=False)
        elif cls is Expired:
            assert isinstance(ev, Expired)
            m.expired_at = ts
            if not m.sender:
                m.sender = ev.sender
        elif cls is Held:
            assert isinstance(ev, Held)
            if not ev.released:
                m.held = True
        elif cls is InboundReject:
            assert isinstance(ev, InboundReject)
            if ev.action == "hold":
                m.held = True
            elif ev.action in ("reject", "discard", "milter-reject", "milter-discard") and (
                ev.program.endswith("/cleanup") or ev.stage in ("DATA", "END-OF-MESSAGE")
            ):
                # the whole message was refused or dropped: its queue file is gone
                del self._open[key]
                out = self._emit(m, out)
        return out or _NOTHING

    def _arrival(self, m: Message, ev: Arrival) -> None:
        if ev.uid is not None:
            m.uid = ev.uid
            if m.origin_kind == "unknown":
                m.origin_kind = "uid"
            if self.resolve_users and not m.user:
                m.user = self.user_name(ev.uid)
        if ev.client_ip or ev.client_name:
            m.client_name = ev.client_name
            m.client_ip = ev.client_ip
            if m.origin_kind in ("unknown", "uid"):
                m.origin_kind = "client"
        if ev.sasl_username or ev.sasl_method:
            m.sasl_method = ev.sasl_method
            m.sasl_username = ev.sasl_username
            m.origin_kind = "sasl"
        if ev.sender and not m.sender:
            m.sender = ev.sender

    def flush(self) -> list[Message]:
        """Emit every open message (as incomplete), e.g. at the end of a log."""
        out = [slot[0] for slot in self._open.values()]
        self._open.clear()
        self.emitted += len(out)
        return out  # type: ignore[return-value]

    def run(self, events: Iterable[PostfixEvent], *, flush: bool = True) -> Iterator[Message]:
        """Feed every event and yield finished messages; flush the rest at the end."""
        feed = self.feed
        for ev in events:
            done = feed(ev)
            if done:
                yield from done
        if flush:
            yield from self.flush()


def link_bounces(messages: Iterable[Message]) -> None:
    """Set ``bounce_of`` on notification messages from their originals' ``notices``.

    For results of sharded correlation (same host); modifies the messages in place.
    """
    msgs = list(messages)
    origin: dict[tuple[str, str], str] = {}
    for m in msgs:
        for n in m.notices:
            origin[(m.host, n.notice_qid)] = m.qid
    for m in msgs:
        if not m.bounce_of:
            o = origin.get((m.host, m.qid))
            if o is not None:
                m.bounce_of = o
