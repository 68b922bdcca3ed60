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
from typing import Any

from mailwarden.events import (
    Arrival,
    BounceNotice,
    Delivery,
    Expired,
    Held,
    InboundReject,
    Message,
    MessageIdSeen,
    MxReply,
    PostfixEvent,
    QueueActive,
    Removed,
    SaslFailure,
    Unparsed,
)
from mailwarden.sources.postfix import (
    _CLIENT,
    _CLIENT_KV,
    _PICKUP,
    _QACTIVE,
    _SKIP8,
    _TZ_SIGNS,
    IGNORED,
    PostfixParser,
    _strip_angle,
)
from mailwarden.sources.stats import ParseStats
from mailwarden.sources.syslog import Envelope

DEFAULT_HORIZON = 7 * 86400.0
DEFAULT_MAX_OPEN = 200_000
_NOTHING: tuple[Message, ...] = ()
_NO_KV: dict[str, str] = {}
#: Event classes that belong to a queue file (others, even with a queue id, are passed over).
_MESSAGE_EVENTS = frozenset(
    {
        Delivery,
        QueueActive,
        MessageIdSeen,
        Removed,
        BounceNotice,
        Expired,
        Held,
        InboundReject,
        MxReply,
    }
)


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
        # (host, qid) -> [message, last log time touched, log time placed at the end]. The
        # dict is in "placed" order; a touch only updates the time (no reordering), and the
        # sweep / cap give touched entries a second chance (moved to the end), which keeps
        # eviction least-recently-used without a reorder per line.
        self._open: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
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
        m = Message(host, qid, ts)
        if self._bounce_of:
            orig = self._bounce_of.pop((host, qid), None)
            if orig is not None:
                m.bounce_of = orig
        od = self._open
        if len(od) >= self.max_open:
            # room first: the new message itself must never be the one evicted (the event
            # that starts it still has to find it)
            out = self._evict_one(out)
        od[(host, qid)] = [m, ts, ts]
        return m, out

    def _evict_one(self, out: list[Message] | None) -> list[Message] | None:
        """Drop the least recently used open message (second-chance order)."""
        od = self._open
        while True:
            key, slot = next(iter(od.items()))
            if slot[1] > slot[2]:  # touched since it was placed: second chance
                slot[2] = slot[1]
                od.move_to_end(key)
                continue
            del od[key]
            self.evicted_full += 1
            return self._emit(slot[0], out)

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
            if slot[2] >= limit:  # placed after the limit: so are all that follow
                break
            if slot[1] >= limit:  # touched recently: place it at the end
                slot[2] = slot[1]
                od.move_to_end(key)
                continue
            del od[key]
            self.evicted_idle += 1
            out = self._emit(slot[0], out)
        self._next_sweep = self.now + min(self.horizon / 10.0, 600.0)
        return out

    @staticmethod
    def _started(m: Message) -> bool:
        return bool(
            m.origin_kind != "unknown"
            or m.attempts
            or m.mx_replies
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
            return (
                self._arrive(
                    host,
                    qid,
                    ts,
                    out,
                    ev.uid,
                    ev.sender,
                    ev.client_name,
                    ev.client_ip,
                    ev.sasl_method,
                    ev.sasl_username,
                )
                or _NOTHING
            )
        if slot is None:
            if cls is Removed or cls not in _MESSAGE_EVENTS:  # nothing to start a message with
                return out or _NOTHING
            m, out = self._start(host, qid, ts, out)
        else:
            m = slot[0]
            slot[1] = ts
        if cls is Delivery:
            m.attempts.append(ev)  # type: ignore[arg-type]
        elif cls is MxReply:
            m.mx_replies.append(ev)  # type: ignore[arg-type]
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
                nslot[0].bounce_of = qid
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
            action = ev.action
            if action in ("hold", "milter-hold"):
                m.held = True
            elif action in ("discard", "milter-discard") or (
                action in ("reject", "milter-reject")
                and (ev.program.endswith("/cleanup") or ev.stage in ("DATA", "END-OF-MESSAGE"))
            ):
                # the whole message was refused or dropped: its queue file is gone
                del self._open[key]
                out = self._emit(m, out)
        return out or _NOTHING

    def _arrive(
        self,
        host: str,
        qid: str,
        ts: float,
        out: list[Message] | None,
        uid: int | None,
        sender: str,
        client_name: str,
        client_ip: str,
        sasl_method: str,
        sasl_username: str,
    ) -> list[Message] | None:
        """A pickup/smtpd arrival line: a new message, unless its first lines came earlier."""
        key = (host, qid)
        slot = self._open.get(key)
        if slot is not None and self._started(slot[0]):
            del self._open[key]  # the queue id was reused (its "removed" line is missing)
            self.reused += 1
            out = self._emit(slot[0], out)
            slot = None
        if slot is None:
            m, out = self._start(host, qid, ts, out)
        else:
            m = slot[0]
            slot[1] = ts
        if uid is not None:
            m.uid = uid
            if m.origin_kind == "unknown":
                m.origin_kind = "uid"
            if self.resolve_users and not m.user:
                m.user = self.user_name(uid)
        if client_ip or client_name:
            m.client_name = client_name
            m.client_ip = client_ip
            if m.origin_kind in ("unknown", "uid"):
                m.origin_kind = "client"
        if sasl_username or sasl_method:
            m.sasl_method = sasl_method
            m.sasl_username = sasl_username
            m.origin_kind = "sasl"
        if sender and not m.sender:
            m.sender = sender
        return out

    def flush(self) -> list[Message]:
        """Emit every open message (as incomplete), e.g. at the end of a log."""
        out: list[Message] = [slot[0] for slot in self._open.values()]
        self._open.clear()
        self.emitted += len(out)
        return out

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


def correlate_lines(
    lines: Iterable[bytes],
    *,
    correlator: Correlator | None = None,
    env: Envelope | None = None,
    stats: ParseStats | None = None,
    parser: PostfixParser | None = None,
    start_offset: int | None = None,
    shard: tuple[int, int] | None = None,
    yield_unparsed: bool = False,
    flush: bool = True,
) -> Iterator[Message | InboundReject | SaslFailure | MxReply | Unparsed]:
    """Raw syslog lines -> finished :class:`Message` s, in one fused loop (library API and
    benchmarks; ``analyze`` uses ``parse_lines`` + ``Folder.events`` or the C accelerator).

    The same result as ``Correlator.run(parse_lines(lines))``, but the four most frequent line
    shapes (``removed``, ``(queue active)``, ``message-id=``, delivery status lines) update the
    open message directly instead of going through an event object. Also yields the events
    that belong to no message: :class:`InboundReject` (all of them, including those with a
    queue id, which also update their message), :class:`SaslFailure` and :class:`MxReply`
    without queue id; and :class:`Unparsed` when ``yield_unparsed``. ``shard=(me, n)``: keep
    only the lines of shard ``me`` (see :func:`mailwarden.sources.shard_of`); the others are
    not even counted.
    """
    corr = correlator if correlator is not None else Correlator()
    if env is None:
        env = Envelope()
    if stats is None:
        stats = ParseStats()
    if parser is None:
        parser = PostfixParser()
    od = corr._open
    start = corr._start
    feed = corr.feed
    delivery = parser._delivery
    arrive = corr._arrive
    pickup = _PICKUP.match
    client = _CLIENT.match
    sender_of = parser.sender
    pmsg = parser.message
    qactive = _QACTIVE.match
    source = env.source
    sec = env.stamps.sec
    iso = env.stamps.iso_cache
    ptag = parser.tag
    tags = parser._tags
    prog_info = parser.program
    hosts = env.hosts
    phost = env.host
    offset = -1 if start_offset is None else start_offset
    track = start_offset is not None
    me, nshards = shard if shard is not None else (0, 1)
    total = parsed = ignored = foreign = ooo = 0
    latest = 0.0
    info: tuple[str, bool] | None
    done: list[Message] | None
    try:
        for raw in lines:
            this_offset = offset
            if track:
                offset += len(raw)
            if nshards > 1:
                i = raw.find(b"]: ")
                j = raw.find(b": ", i + 9, i + 36) if i >= 0 else -1
                if j >= 0:
                    sq = raw[i + 3 : j]
                    if sq.isalnum() and sq != b"NOQUEUE":
                        if raw[j - 1] % nshards != me:
                            continue
                    elif me:
                        continue
                elif me:
                    continue
            total += 1
            # -- envelope (as in parse_lines) -------------------------------------------
            hit = sec.get(raw[:15])
            at = 16
            if hit is None and raw[26:27] in _TZ_SIGNS and raw[32:33] == b" ":
                # rsyslog RFC 3339 "2026-11-27T17:31:17.507827+00:00 " (Debian's default)
                base = iso.get(raw[:19] + raw[26:32])
                frac = raw[20:26]
                if base is not None and frac.isdigit() and raw[19:20] == b".":
                    # the same rounding as Stamps.iso (a cache miss): digits / 10**6
                    hit = base + int(frac) / 1e6
                    at = 33
            parts = None
            if not (hit is None or raw[at - 1 : at] != b" " or len(raw) > 65536 or b"\x00" in raw):
                if raw[-1] == 10:
                    parts = raw[at : -2 if raw[-2] == 13 else -1].split(b" ", 2)
                else:
                    parts = raw[at:].split(b" ", 2)
                if len(parts) != 3:
                    # fewer fields: read as on a stamp cache miss, so that the verdict on a
                    # line never depends on which stamps were seen before
                    parts = None
            if parts is None:
                out = env.split(raw)
                if isinstance(out, str):
                    if out == "syslogd":
                        foreign += 1
                        stats.program("syslogd")
                        continue
                    if track and not raw.endswith(b"\n") and out != "empty":
                        out = "truncated"
                    u = stats.unparsed_line(source, this_offset, raw, out)
                    if yield_unparsed:
                        yield u
                    continue
                ts, host, program, _pid, msg = out
                info = prog_info(program)
            else:
                assert hit is not None
                ts = hit
                hb, tag, msg = parts
                info = tags.get(tag)
                if info is None:
                    info = ptag(tag)
                    if info is None:
                        if tag in (b"last", b"--", b"message"):
                            foreign += 1
                            stats.program("syslogd")
                            continue
                        u = stats.unparsed_line(source, this_offset, raw, "no program tag")
                        if yield_unparsed:
                            yield u
                        continue
                hs = hosts.get(hb)
                host = phost(hb) if hs is None else hs
            if ts < latest - 1.0:
                ooo += 1
            elif ts > latest:
                latest = ts
            if not info[1]:
                foreign += 1
                stats.program(info[0])
                continue
            if msg[:8] in _SKIP8 and msg[8:11] != b"to ":
                ignored += 1
                continue
            # -- the frequent shapes, straight into the open message ---------------------
            c = msg.find(b": ")
            if 6 <= c <= 32:
                q = msg[:c]
                if q.isalnum() and q != b"NOQUEUE":
                    rest = msg[c + 2 :]
                    head = rest[:4]
                    qid = q.decode("ascii")
                    kind = 0
                    if head == b"to=<":
                        d = delivery(ts, host, qid, info[0], rest)
                        if d is not None:
                            kind = 1
                    elif rest == b"removed":
                        kind = 2
                    elif head == b"from":
                        mq = qactive(rest)
                        if mq is not None:
                            kind = 3
                    elif head == b"mess" and rest.startswith(b"message-id="):
                        kind = 4
                    elif head == b"uid=":
                        mp = pickup(rest)
                        if mp is not None:
                            kind = 5
                    elif head == b"clie":
                        mc = client(rest.decode("utf-8", "replace"))
                        if mc is not None:
                            kind = 6
                    if kind:
                        parsed += 1
                        if ts > corr.now:
                            corr.now = ts
                            if ts >= corr._next_sweep:
                                done = corr._sweep(None)
                                if done:
                                    yield from done
                        if kind >= 5:
                            if kind == 5:
                                assert mp is not None
                                done = arrive(host, qid, ts, None, int(mp[1]), sender_of(mp[2]),
                                              "", "", "", "")  # fmt: skip
                            else:
                                assert mc is not None
                                kv = mc["kv"]
                                f = dict(_CLIENT_KV.findall(kv)) if kv else _NO_KV
                                done = arrive(
                                    host, qid, ts, None, None, "", mc["name"], mc["ip"],
                                    f.get("sasl_method", ""), f.get("sasl_username", ""),
                                )  # fmt: skip
                            if done:
                                yield from done
                            continue
                        key = (host, qid)
                        if kind == 2:
                            slot = od.pop(key, None)
                            if slot is not None:
                                m = slot[0]
                                m.removed_at = ts
                                m.complete = True
                                corr.emitted += 1
                                yield m
                            continue
                        slot = od.get(key)
                        if slot is None:
                            m, done = start(host, qid, ts, None)
                            if done:
                                yield from done
                        else:
                            m = slot[0]
                            slot[1] = ts
                        if kind == 1:
                            m.attempts.append(d)
                        elif kind == 3:
                            if not m.sender:
                                m.sender = sender_of(mq[1])  # type: ignore[index]
                            m.size = int(mq[2])  # type: ignore[index]
                            m.nrcpt = int(mq[3])  # type: ignore[index]
                        elif rest[11:12] == b"<" and rest[-1:] == b">":
                            m.message_id = rest[12:-1].decode("utf-8", "replace")
                        else:
                            m.message_id = _strip_angle(rest[11:].decode("utf-8", "replace"))
                        continue
            # -- everything else: an event, then the correlator ---------------------------
            ev = pmsg(ts, host, info[0], msg)
            if isinstance(ev, str):
                if ev == IGNORED:
                    ignored += 1
                    continue
                why = ev
                if track and not raw.endswith(b"\n"):
                    why = "truncated"
                u = stats.unparsed_line(source, this_offset, raw, why)
                if yield_unparsed:
                    yield u
                continue
            parsed += 1
            cls = ev.__class__
            if cls is InboundReject or cls is SaslFailure or (cls is MxReply and not ev.qid):
                yield ev  # type: ignore[misc]
            res = feed(ev)
            if res:
                yield from res
        if flush:
            yield from corr.flush()
    finally:
        stats.total += total
        stats.parsed += parsed
        stats.ignored += ignored
        stats.foreign += foreign
        stats.out_of_order += ooo
