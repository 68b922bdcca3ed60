"""The correlator's open messages as plain JSON, saved with every log checkpoint.

A message's lines are spread over minutes (or days when it is deferred); the daemon commits
its follow position every second. To resume after ``kill -9`` with nothing lost and nothing
counted twice, the messages still open at a checkpoint are saved with it (same transaction)
and put back into a new :class:`~mailwarden.sources.Correlator` on start.

JSON, not pickle: the store may be a PostgreSQL shared by a fleet, and nothing read from it may
execute code. Only the event classes below are accepted; anything else fails loudly
(:class:`ValueError`) and the daemon starts with an empty correlator instead.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

from mailwarden.events import BounceNotice, Delivery, Message, MxReply, Reply
from mailwarden.sources.correlate import Correlator

#: Bumped when the layout changes; an unknown version is ignored (fresh correlator).
VERSION = 1

_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Message))
_DELIVERY_FIELDS = tuple(f.name for f in dataclasses.fields(Delivery) if f.name != "reply")
_REPLY_FIELDS = tuple(f.name for f in dataclasses.fields(Reply))
_NOTICE_FIELDS = tuple(f.name for f in dataclasses.fields(BounceNotice))
_MX_FIELDS = tuple(f.name for f in dataclasses.fields(MxReply) if f.name != "reply")


def _delivery(d: Delivery | MxReply) -> dict[str, Any]:
    fields = _DELIVERY_FIELDS if isinstance(d, Delivery) else _MX_FIELDS
    out = {k: getattr(d, k) for k in fields}
    if d.reply is not None:
        out["reply"] = {k: getattr(d.reply, k) for k in _REPLY_FIELDS}
    return out


def _reply(r: Any) -> Reply | None:
    return Reply(**_only(r, _REPLY_FIELDS, "reply")) if r is not None else None


def encode_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in _MESSAGE_FIELDS:
        v = getattr(m, k)
        if k in ("attempts", "mx_replies"):
            v = [_delivery(d) for d in v]
        elif k == "notices":
            v = [{f: getattr(n, f) for f in _NOTICE_FIELDS} for n in v]
        out[k] = v
    return out


def _only(d: Any, fields: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ValueError(f"snapshot: {what} is not an object")
    unknown = set(d) - set(fields) - {"reply"}
    if unknown:
        raise ValueError(f"snapshot: unknown {what} fields {sorted(unknown)}")
    return d


def decode_message(d: Any) -> Message:
    d = dict(_only(d, _MESSAGE_FIELDS, "message"))
    attempts = []
    for a in d.pop("attempts", []):
        a = dict(_only(a, _DELIVERY_FIELDS, "attempt"))
        r = _reply(a.pop("reply", None))
        attempts.append(Delivery(**a, reply=r))
    mx = []
    for a in d.pop("mx_replies", []):
        a = dict(_only(a, _MX_FIELDS, "connection-level reply"))
        r = _reply(a.pop("reply", None))
        mx.append(MxReply(**a, reply=r))
    notices = [BounceNotice(**_only(n, _NOTICE_FIELDS, "notice")) for n in d.pop("notices", [])]
    m = Message(**d)
    m.attempts = attempts
    m.mx_replies = mx
    m.notices = notices
    return m


def snapshot(c: Correlator) -> dict[str, Any]:
    """The open messages of ``c`` (with their last-touched times) and its clock."""
    # The correlator keeps (host, qid) -> [message, touched, placed] in placement order;
    # restoring it in that order keeps the same eviction behaviour.
    opened = [[encode_message(s[0]), s[1], s[2]] for s in c._open.values()]
    return {
        "version": VERSION,
        "now": c.now,
        "next_sweep": c._next_sweep,
        "open": opened,
        "bounce_of": [[h, q, o] for (h, q), o in c._bounce_of.items()],
    }


def restore(c: Correlator, data: Any) -> int:
    """Put the messages of a :func:`snapshot` back into (an empty) ``c``; returns how many.

    Raises :class:`ValueError` for a snapshot that is not one of ours."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError("snapshot: unknown version")
    od: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
    for item in data.get("open", []):
        if not isinstance(item, list) or len(item) != 3:
            raise ValueError("snapshot: bad open-message entry")
        m = decode_message(item[0])
        od[(m.host, m.qid)] = [m, float(item[1]), float(item[2])]
    bo: OrderedDict[tuple[str, str], str] = OrderedDict()
    for item in data.get("bounce_of", []):
        h, q, o = item
        bo[(str(h), str(q))] = str(o)
    c._open = od
    c._bounce_of = bo
    c.now = float(data.get("now", 0.0))
    c._next_sweep = float(data.get("next_sweep", 0.0))
    return len(od)
