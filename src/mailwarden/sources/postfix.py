"""Postfix log messages -> the events of :mod:`mailwarden.events`.

Input is a syslog line already split by :mod:`mailwarden.sources.syslog` (or a journald record):
time, host, program (``postfix/smtp``, ``postfix-bulk/smtp``, ``postfix/suspended/smtp``) and the
message. One message yields at most one event:

===========================================================  ===================================
``QID: uid=33 from=<s>`` (pickup)                             :class:`Arrival` (uid)
``QID: client=name[ip]:port, sasl_method=, orig_queue_id=``   :class:`Arrival` (client, SASL)
``QID: message-id=<id>`` / ``resent-message-id=`` (cleanup)   :class:`MessageIdSeen`
``QID: from=<s>, size=N, nrcpt=N (queue active)`` (qmgr)      :class:`QueueActive`
``QID: from=<s>, status=expired, returned to sender``         :class:`Expired`
``QID: removed``                                              :class:`Removed`
``QID: to=<r>, [orig_to=<o>,] relay=, ... status=x (text)``   :class:`Delivery` (any agent)
``QID: sender non-delivery notification: NEWQID`` (bounce)    :class:`BounceNotice`
``QID: placed on hold`` / ``released from hold`` (postsuper)  :class:`Held`
``NOQUEUE|QID: reject|hold|discard|filter|...: STAGE from``   :class:`InboundReject`
``warning: name[ip]: SASL LOGIN authentication failed: ...``  :class:`SaslFailure`
``QID: host X[ip] said|refused to talk to me: ...`` (smtp)    :class:`MxReply` (one MX's reply)
``QID: lost connection with|conversation with X[ip] ...``     :class:`MxReply`
``[QID: ]connect to X[ip]:25: ...``, ``QID: TLS is required`` :class:`MxReply`
===========================================================  ===================================

smtp(8)/lmtp(8) write a line of their own (``MxReply``) when they give up on one MX host and
try the next, or defer without a per-recipient status; the final MX's reply is only in the
status lines. ``connect to`` failures are the exception: smtp(8) logs them without a queue id,
for the last MX too (recorded on Postfix 3.7: ``tests/data/sources/mx-replies.log``).
:class:`ConnectClaims` gives them the queue id their process names next and drops the one
that its status lines repeat (see there).

Postfix lines that are understood but carry nothing the pipeline needs (connect/disconnect,
warnings, statistics, TLS chatter, master start/reload) are counted as ``ignored``; other Postfix
lines as ``unparsed`` (with a bounded sample); lines of other programs as ``foreign``.

The hot path (:func:`parse_lines`) works on bytes: one dict lookup for the stamp, one for the
program tag, a dispatch on the first bytes after the queue id, and a regex only for the shapes
that need one. Queue ids: short hex (``394D3162231``) and long base-52 ids, ``[0-9A-Za-z]{6,}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Final

from mailwarden.events import (
    Arrival,
    BounceNotice,
    Delivery,
    Expired,
    Held,
    InboundReject,
    LogLine,
    MessageIdSeen,
    MxReply,
    PostfixEvent,
    QueueActive,
    Removed,
    Reply,
    SaslFailure,
    Unparsed,
)
from mailwarden.sources._fast import constructor
from mailwarden.sources.reply import parse_reply, split_code
from mailwarden.sources.stats import ParseStats
from mailwarden.sources.syslog import Envelope, parse_tag

#: Program names Postfix daemons and commands log under (the last part of the syslog tag).
POSTFIX_PROGRAMS: Final = frozenset(
    {
        "anvil",
        "bounce",
        "cleanup",
        "defer",
        "discard",
        "dnsblog",
        "error",
        "flush",
        "lmtp",
        "local",
        "master",
        "nqmgr",
        "oqmgr",
        "pickup",
        "pipe",
        "postalias",
        "postcat",
        "postconf",
        "postdrop",
        "postfix",
        "postfix-script",
        "postkick",
        "postlock",
        "postlog",
        "postlogd",
        "postmap",
        "postmulti",
        "postqueue",
        "postscreen",
        "postsuper",
        "proxymap",
        "qmgr",
        "qmqpd",
        "retry",
        "scache",
        "sendmail",
        "showq",
        "smtp",
        "smtpd",
        "spawn",
        "tlsmgr",
        "tlsproxy",
        "trace",
        "trivial-rewrite",
        "verify",
        "virtual",
    }
)

_Q_MIN, _Q_MAX = 6, 32


def is_postfix(program: str) -> bool:
    """``postfix/smtp``, ``postfix-bulk/smtp``, ``postfix/suspended/smtp``: yes. ``dovecot``: no."""
    if "/" not in program:
        return program.startswith("postfix")
    return program.rsplit("/", 1)[1] in POSTFIX_PROGRAMS or program.startswith("postfix")


def qid_of(raw: bytes) -> bytes | None:
    """The queue id of a raw syslog line, cheaply (for sharding lines by message), or None.

    For ``bounce`` notification lines this is the id of the original message.
    """
    i = raw.find(b"]: ")
    if i < 0:
        return None
    j = raw.find(b": ", i + 3, i + 3 + _Q_MAX + 1)
    if j < 0:
        return None
    q = raw[i + 3 : j]
    if len(q) < _Q_MIN or not q.isalnum() or q == b"NOQUEUE":
        return None
    return q


def shard_of(raw: bytes, nshards: int) -> int:
    """The shard (0..nshards-1) of a raw line: the last byte of its queue id modulo ``nshards``,
    so every line of one message lands in the same shard; lines without a queue id go to 0.
    ``parse_lines(shard=...)`` and ``correlate_lines(shard=...)`` use this rule."""
    i = raw.find(b"]: ")
    j = raw.find(b": ", i + 9, i + 36) if i >= 0 else -1
    if j >= 0 and raw[i + 3 : j].isalnum() and raw[i + 3 : j] != b"NOQUEUE":
        return raw[j - 1] % nshards
    return 0


# ------------------------------------------------------------------------------------------
# Line shapes (after "QID: ")
# ------------------------------------------------------------------------------------------

_DELIVERY = re.compile(
    r"to=<([^>]*)>, (?:orig_to=<([^>]*)>, )?relay=([^,]*), "
    r"(?:conn_use=(\d+), )?delay=(\d+(?:\.\d+)?), delays=([\d./]+), "
    r"(?:dsn=(\d\.\d{1,3}\.\d{1,3}), )?status=([a-z-]+)(?: \((.*)\))?$",
    re.S,
)
_KV = re.compile(r"(?:^|, )([a-z_]+)=(<.*?>|[^,]*)")
_RELAY = re.compile(r"(?P<host>[^\[\]]*)\[(?P<ip>[^\]]*)\](?::(?P<port>\d+))?$")
_QACTIVE = re.compile(rb"from=<(.*?)>, size=(\d+), nrcpt=(\d+) \(queue active\)$", re.S)
_EXPIRED = re.compile(rb"from=<(.*?)>, status=(?:force-)?expired, returned to sender$", re.S)
_PICKUP = re.compile(rb"uid=(\d+) from=<(.*)>$", re.S)
_CLIENT = re.compile(r"client=(?P<name>[^\[\]\s]*)\[(?P<ip>[^\]]*)\](?::(?P<port>\d+))?(?P<kv>.*)$")
_CLIENT_KV = re.compile(r", (\w+)=([^,]*)")
_NOTICE = re.compile(
    rb"(?:sender|postmaster) (non-delivery|delay|delivery status|success) notification: "
    rb"([0-9A-Za-z]{6,32})$"
)
_ACTION = re.compile(
    r"(?P<action>reject|defer|hold|discard|filter|redirect|warn|warning|milter-reject|"
    r"milter-hold|milter-discard|reject_warning|defer_if_permit|defer_if_reject|bcc|prepend): "
    r"(?P<stage>[A-Z][A-Z-]*|header|body) (?P<rest>.*)$",
    re.S,
)
_FROM_CLIENT = re.compile(r"from (?P<name>[^\[\]\s]*)\[(?P<ip>[^\]]*)\](?::\d+)?(?:: |;|$)")
_TAIL_KV = re.compile(  # smtpd/cleanup "from=<a> to=<b> proto=P helo=<h>" (postscreen: ", ")
    r"from=<(?P<from>.*?)>(?:,? to=<(?P<to>.*?)>)?(?:,? proto=(?P<proto>[^\s,]+))?"
    r"(?:,? helo=<(?P<helo>.*?)>)?(?:: (?P<text>.*))?$",
    re.S,
)
_SASL = re.compile(
    r"warning: (?P<name>[^\[\]\s]*)\[(?P<ip>[^\]]*)\](?::\d+)?: SASL (?P<method>\S+) "
    r"authentication failed: ?(?P<detail>.*?)(?:, sasl_username=(?P<user>.*))?$"
)

# smtp(8)/lmtp(8) lines about one MX host (after "QID: "): -> (kind, host, ip, port)
_MX_HOST = re.compile(
    rb"host ([^\s\[\]]*)\[([^\]\s]*)\](?::(\d{1,5}))? (said|refused to talk to me): "
)
_MX_CONNECT = re.compile(rb"connect to ([^\s\[\]]*)\[([^\]\s]*)\](?::(\d{1,5}))?: ")
_MX_LOST = re.compile(rb"lost connection with ([^\s\[\]]*)\[([^\]\s]*)\](?::(\d{1,5}))? while ")
_MX_TIMEOUT = re.compile(
    rb"conversation with ([^\s\[\]]*)\[([^\]\s]*)\](?::(\d{1,5}))? timed out while "
)
_MX_TLS = re.compile(
    rb"TLS is required, but (?:was not offered by )?host ([^\s\[\]]*)\[([^\]\s]*)\](?::(\d{1,5}))?"
)
_MX_AGENTS: Final = ("smtp", "lmtp")
#: first 4 bytes -> (pattern, kind); a ``host ... refused to talk to me`` is kind "refused"
_MX_SHAPES: Final = {
    b"host": (_MX_HOST, "said"),
    b"conn": (_MX_CONNECT, "connect"),
    b"lost": (_MX_LOST, "lost"),
    b"conv": (_MX_TIMEOUT, "timeout"),
    b"TLS ": (_MX_TLS, "tls"),
}

#: Postfix messages that are understood and deliberately not turned into events (matched
#: at the start of the message, after an optional "QID: "). Anything else is "unparsed".
_IGNORED_SHAPES = (
    # severity-prefixed diagnostics of every daemon
    r"(?:warning|error|fatal|panic|info|debug): ",
    # smtpd sessions
    r"(?:dis)?connect from ",
    r"(?:NOQUEUE: )?lost connection after \S+ from ",
    r"timeout after \S+ from ",
    r"too many errors after \S+ from ",
    r"improper command pipelining after \S+ from ",
    r"discarding EHLO keywords: ",
    r"NOQUEUE: client=",
    r"SSL_(?:accept|connect) error (?:from|to) ",
    r"(?:Anonymous|Trusted|Untrusted|Verified) TLS connection (?:established|reused) (?:from|to) ",
    r"setting up TLS connection (?:from|to) ",
    # smtp: attempts at one MX before the next is tried, TLS chatter
    r"connect to \S*\[[^\]]*\](?::\d+)?: ",
    r"host \S*\[[^\]]*\] (?:said|refused to talk to me): ",
    r"lost connection with \S*\[[^\]]*\] while ",
    r"conversation with \S*\[[^\]]*\] timed out while ",
    r"enabling PIX workarounds: ",
    r"breaking line > \d+ bytes",
    r"Host offered STARTTLS: ",
    r"(?:server )?certificate verification failed for ",
    r"Cannot start TLS: ",
    r"TLS is required, but ",
    r"(?:Server|Peer) certificate not (?:trusted|verified)",
    # qmgr, postsuper, cleanup actions that change nothing we track
    r"skipped, still being delivered",
    r"requeued$",
    r"(?:Deleted|Placed on hold|Released from hold|Requeued|Expired): \d+ messages?$",
    r"replace: (?:header|body) ",
    r"info: (?:header|body) ",
    # master, postfix-script, statistics, table reloads
    r"daemon started -- version ",
    r"reload -- version ",
    r"terminating on signal ",
    r"master exit time has arrived",
    r"(?:starting|refreshing|stopping) the Postfix mail system",
    r"waiting for the Postfix mail system to terminate",
    r"the Postfix mail system is (?:not )?running",
    r"statistics: ",
    r"table \S+ has changed -- restarting",
    # postscreen and dnsblog
    r"(?:CONNECT from|PASS NEW|PASS OLD|DNSBL rank \d+ for|HANGUP after|DISCONNECT|PREGREET \d+"
    r" after|BARE NEWLINE from|COMMAND PIPELINING from|NON-SMTP COMMAND from|"
    r"COMMAND (?:TIME|COUNT|LENGTH) LIMIT from|(?:WHITE|ALLOW|BLACK|DENY)LISTED|"
    r"(?:WHITE|ALLOW)LIST VETO) ",
    r"addr \S+ listed by domain ",
    # rsyslog's repeated-message reduction ("message repeated 3 times: [ warning: ...]")
    r"message repeated \d+ times: \[",
)
_IGNORE = re.compile("|".join(f"(?:{x})" for x in _IGNORED_SHAPES))

_HEAD_TO, _HEAD_FROM, _HEAD_MID, _HEAD_REMOVED, _HEAD_UID, _HEAD_CLIENT = range(6)
_HEAD_NOTICE, _HEAD_HOLD, _HEAD_RESENT, _HEAD_MX = 6, 7, 8, 9
_HEADS: Final = {
    b"to=<": _HEAD_TO,
    b"from": _HEAD_FROM,
    b"mess": _HEAD_MID,
    b"remo": _HEAD_REMOVED,
    b"uid=": _HEAD_UID,
    b"clie": _HEAD_CLIENT,
    b"send": _HEAD_NOTICE,
    b"post": _HEAD_NOTICE,
    b"plac": _HEAD_HOLD,
    b"rele": _HEAD_HOLD,
    b"rese": _HEAD_RESENT,
    **dict.fromkeys(_MX_SHAPES, _HEAD_MX),
}
_NOTICE_KIND: Final = {
    b"non-delivery": "non-delivery",
    b"delay": "delay",
    b"delivery status": "delivery",
    b"success": "success",
}


def _int(s: str | bytes | None) -> int | None:
    if not s:
        return None
    try:
        return int(s)
    except ValueError:
        return None


def _float(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _strip_angle(s: str) -> str:
    s = s.strip()
    if s.startswith("<") and s.endswith(">"):
        return s[1:-1]
    return s


# Fast positional constructors (field order guarded by tests/sources/test_fast.py).
_new_arrival = constructor(Arrival)
_new_mid = constructor(MessageIdSeen)
_new_qactive = constructor(QueueActive)
_new_delivery = constructor(Delivery)
_new_notice = constructor(BounceNotice)
_new_expired = constructor(Expired)
_new_removed = constructor(Removed)
_new_held = constructor(Held)
_new_reply = constructor(Reply)

_SKIP8: Final = frozenset({b"connect ", b"disconne"})
_TZ_SIGNS: Final = (b"+", b"-")

#: Sentinel: understood, nothing to emit.
IGNORED: Final = "ignored"


class PostfixParser:
    """Turns Postfix messages into events; holds bounded caches of repeated values."""

    __slots__ = ("_programs", "_relays", "_replies", "_senders", "_tags")

    def __init__(self) -> None:
        self._replies: dict[str, Reply] = {}
        self._relays: dict[str, tuple[str, str, int | None]] = {}
        self._senders: dict[bytes, str] = {}
        # tag bytes -> (program, is_postfix) or None when not a syslog tag
        self._tags: dict[bytes, tuple[str, bool] | None] = {}
        self._programs: dict[str, tuple[str, bool]] = {}

    # -- small cached helpers ----------------------------------------------------------
    def reply(self, text: str) -> Reply:
        r = self._replies.get(text)
        if r is None:
            if text[:1] == "2" and text[3:4] == " ":
                # "250 2.0.0 Ok: queued as X": success replies, unique, parsed cheaply
                sp = text.find(" ", 4)
                enh = text[4:sp] if sp > 4 and text[5:6] == "." else ""
                body = text[sp + 1 :] if enh else text[4:]
                if text[:3].isdigit() and "  " not in body:
                    return _new_reply(int(text[:3]), enh, body, "", "", "", True, text)
            r = parse_reply(text)
            if len(self._replies) > 20_000:
                self._replies.clear()
            # "250 ... queued as <unique id>" is never reused; long texts would make the cache
            # big (20,000 entries of at most 1 KiB)
            if len(text) <= 1024 and not text.startswith("250 "):
                self._replies[text] = r
        return r

    def reply_of_text(self, text: str | None) -> Reply | None:
        """The reply of a delivery status line's text (the part in its last parentheses):
        None without text; the ``250 x.y.z`` acceptance of a receiver parsed inline."""
        if not text:
            return None
        if text[:4] == "250 " and text[5:6] == "." and text[9:10] == " ":
            # "250 2.0.0 Ok: queued as X": unique per line, not worth a cache entry
            return _new_reply(250, text[4:9], text[10:], "", "", "", True, text)
        return self.reply(text)

    def relay(self, relay: str) -> tuple[str, str, int | None]:
        r = self._relays.get(relay)
        if r is None:
            m = _RELAY.match(relay)
            if m is None:
                r = ("", "", None)
            else:
                r = (m.group("host"), m.group("ip"), _int(m.group("port")))
            if len(self._relays) > 20_000:
                self._relays.clear()
            if len(relay) <= 300:
                self._relays[relay] = r
        return r

    def sender(self, b: bytes) -> str:
        s = self._senders.get(b)
        if s is None:
            s = b.decode("utf-8", "replace")
            if len(self._senders) > 20_000:
                self._senders.clear()
            if len(b) <= 320:
                self._senders[b] = s
        return s

    def tag(self, tag: bytes) -> tuple[str, bool] | None:
        hit = self._tags.get(tag, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        t = parse_tag(tag)
        out = None if t is None else (t[0], is_postfix(t[0]))
        if len(self._tags) > 100_000:
            self._tags.clear()
        if len(tag) <= 128:
            self._tags[tag] = out
        return out

    def program(self, program: str) -> tuple[str, bool]:
        """``(program, is_postfix(program))``, cached."""
        hit = self._programs.get(program)
        if hit is None:
            hit = (program, is_postfix(program))
            if len(self._programs) < 10_000:
                self._programs[program] = hit
        return hit

    # -- one message -------------------------------------------------------------------
    def message(self, ts: float, host: str, program: str, msg: bytes) -> PostfixEvent | str:
        """Parse one Postfix message. Returns an event, :data:`IGNORED`, or a reason string
        (``"unknown postfix line"``) when the line is not understood."""
        c = msg.find(b": ")
        if _Q_MIN <= c <= _Q_MAX:
            q = msg[:c]
            if q.isalnum():
                rest = msg[c + 2 :]
                head = rest[:4]
                # the most frequent shapes first, inline
                if head == b"to=<":
                    ev: PostfixEvent | str | None = self._delivery(
                        ts, host, q.decode("ascii"), program, rest
                    )
                elif head == b"from":
                    m = _QACTIVE.match(rest)
                    if m is not None:
                        return _new_qactive(
                            ts, host, q.decode("ascii"), program, self.sender(m[1]),
                            int(m[2]), int(m[3]),
                        )  # fmt: skip
                    ev = self._qid_line(ts, host, q.decode("ascii"), program, rest, _HEAD_FROM)
                elif rest == b"removed":
                    return _new_removed(ts, host, q.decode("ascii"), program)
                elif q == b"NOQUEUE":
                    return self._action(ts, host, "", program, rest, msg)
                else:
                    ev = self._qid_line(
                        ts, host, q.decode("ascii"), program, rest, _HEADS.get(head)
                    )
                if ev is not None:
                    return ev
        return self._other(ts, host, program, msg)

    def _qid_line(
        self, ts: float, host: str, qid: str, program: str, rest: bytes, head: int | None
    ) -> PostfixEvent | str | None:
        if head == _HEAD_TO:
            return self._delivery(ts, host, qid, program, rest)
        if head == _HEAD_FROM:
            m = _QACTIVE.match(rest)
            if m is not None:
                return _new_qactive(ts, host, qid, program, self.sender(m[1]), int(m[2]), int(m[3]))
            m = _EXPIRED.match(rest)
            if m is not None:
                return _new_expired(ts, host, qid, program, self.sender(m[1]))
            return None
        if head == _HEAD_MID:
            if rest.startswith(b"message-id="):
                mid = _strip_angle(rest[11:].decode("utf-8", "replace"))
                return _new_mid(ts, host, qid, program, mid, False)
            return None
        if head == _HEAD_REMOVED:
            if rest == b"removed":
                return _new_removed(ts, host, qid, program)
            return None
        if head == _HEAD_UID:
            m = _PICKUP.match(rest)
            if m is not None:
                return _new_arrival(ts, host, qid, program, int(m[1]), self.sender(m[2]))
            return None
        if head == _HEAD_CLIENT:
            return self._client(ts, host, qid, program, rest)
        if head == _HEAD_NOTICE:
            m = _NOTICE.match(rest)
            if m is not None:
                return _new_notice(ts, host, qid, program, _NOTICE_KIND[m[1]], m[2].decode("ascii"))
            return None
        if head == _HEAD_HOLD:
            if rest == b"placed on hold":
                return _new_held(ts, host, qid, program, False, "")
            if rest == b"released from hold":
                return _new_held(ts, host, qid, program, True, "")
            return None
        if head == _HEAD_MX:
            return self._mx(ts, host, qid, program, rest)
        if head == _HEAD_RESENT:
            if rest.startswith(b"resent-message-id="):
                mid = _strip_angle(rest[18:].decode("utf-8", "replace"))
                return _new_mid(ts, host, qid, program, mid, True)
            return None
        ev = self._action(ts, host, qid, program, rest, None)
        if isinstance(ev, InboundReject):
            return ev
        return None

    def _delivery(
        self, ts: float, host: str, qid: str, program: str, rest: bytes
    ) -> Delivery | None:
        s = rest.decode("utf-8", "replace")
        m = _DELIVERY.match(s)
        if m is not None:
            to, orig, relay, cu, delay, delays, dsn, status, text = m.groups()
            delay_f: float | None = float(delay)
            conn_use = int(cu) if cu else None
        else:
            f = self._generic_fields(s)
            if f is None:
                return None
            to, orig, relay, cu, delay, delays, dsn, status, text = f
            delay_f = _float(delay)
            conn_use = _int(cu)
        rel = self._relays.get(relay)
        rh, ri, rp = self.relay(relay) if rel is None else rel
        reply = self.reply_of_text(text)
        if reply is not None and not rh and reply.host:
            rh, ri = reply.host, reply.ip
        return _new_delivery(
            ts, host, qid, program, to, orig or "", relay, rh, ri, rp, conn_use, delay_f,
            delays or "", dsn or "", status, text or "", reply,
        )  # fmt: skip

    def _mx(self, ts: float, host: str, qid: str, program: str, rest: bytes) -> MxReply | None:
        """smtp(8)/lmtp(8) on one MX host (``rest``: the message after ``QID: ``, or the whole
        message of a ``connect to`` line without queue id); None for other shapes."""
        if program.rpartition("/")[2] not in _MX_AGENTS:
            return None
        shape = _MX_SHAPES.get(rest[:4])
        if shape is None:
            return None
        pattern, kind = shape
        m = pattern.match(rest)
        if m is None:
            return None
        if kind == "said" and m[4] != b"said":
            kind = "refused"
        text = rest.decode("utf-8", "replace")
        if len(text) > 8192:  # a reply is at most a few KiB; keep what a row can hold
            text = text[:8192]
        return MxReply(
            ts,
            host,
            qid,
            program,
            relay_host=m[1].decode("utf-8", "replace"),
            relay_ip=m[2].decode("utf-8", "replace"),
            relay_port=_int(m[3]),
            kind=kind,
            text=text,
            reply=self.reply(text),
        )

    @staticmethod
    def _generic_fields(
        s: str,
    ) -> tuple[str, str, str, str, str, str, str, str, str] | None:
        """Fallback for delivery lines with fields in another order or unknown extra fields."""
        k = s.find(", status=")
        if k < 0:
            if not s.startswith("status="):
                return None
            k = -2
        head, tail = s[:k], s[k + 2 :]
        fields = {key: val for key, val in _KV.findall(head)}
        to = fields.get("to", "")
        if not to.startswith("<"):
            return None
        sp = tail.find(" (")
        if sp < 0:
            status, text = tail[7:], ""
        else:
            status = tail[7:sp]
            text = tail[sp + 2 : -1] if tail.endswith(")") else tail[sp + 2 :]
        if not status.replace("-", "").isalpha():
            return None
        return (
            _strip_angle(to),
            _strip_angle(fields.get("orig_to", "")),
            fields.get("relay", ""),
            fields.get("conn_use", ""),
            fields.get("delay", ""),
            fields.get("delays", ""),
            fields.get("dsn", ""),
            status,
            text,
        )

    def _client(self, ts: float, host: str, qid: str, program: str, rest: bytes) -> Arrival | None:
        m = _CLIENT.match(rest.decode("utf-8", "replace"))
        if m is None:
            return None
        kv = dict(_CLIENT_KV.findall(m.group("kv"))) if m.group("kv") else {}
        return Arrival(
            ts,
            host,
            qid,
            program,
            client_name=m.group("name"),
            client_ip=m.group("ip"),
            client_port=_int(m.group("port")),
            sasl_method=kv.get("sasl_method", ""),
            sasl_username=kv.get("sasl_username", ""),
            orig_qid=kv.get("orig_queue_id", ""),
        )

    def _action(
        self, ts: float, host: str, qid: str, program: str, rest: bytes, whole: bytes | None
    ) -> PostfixEvent | str:
        s = rest.decode("utf-8", "replace")
        m = _ACTION.match(s)
        if m is None:
            if whole is not None:  # NOQUEUE line of another shape
                return self._other(ts, host, program, whole)
            return "unknown postfix line"
        action = m.group("action")
        if action == "warning":
            action = "warn"
        stage, body = m.group("stage"), m.group("rest")
        cname = cip = ""
        text = body
        tail = ""
        if stage in ("header", "body"):
            # cleanup: "header Subject: x from name[ip]; from=<a> to=<b> proto=P helo=<h>: text"
            k = body.rfind("; from=<")
            if k >= 0:
                head, tail = body[:k], body[k + 2 :]
                j = head.rfind(" from ")
                if j >= 0:
                    cm = _FROM_CLIENT.match(head, j + 1)
                    if cm is not None:
                        cname, cip = cm.group("name"), cm.group("ip")
                text = ""
        else:
            cm = _FROM_CLIENT.match(body)
            if cm is not None:
                cname, cip = cm.group("name"), cm.group("ip")
                body = body[cm.end() :]
            k = body.rfind("; from=<")
            if k < 0:
                k = body.rfind("; proto=")
            if k >= 0:
                text, tail = body[:k], body[k + 2 :]
            else:
                text = body
        sender = rcpt = helo = proto = ""
        if tail:
            t = _TAIL_KV.match(tail)
            if t is not None:
                sender = t.group("from") or ""
                rcpt = t.group("to") or ""
                helo = t.group("helo") or ""
                proto = t.group("proto") or ""
                if t.group("text"):
                    text = t.group("text")
            elif tail.startswith("proto="):
                proto = tail[6:].split(" ", 1)[0]
        code, enh, clean = split_code(text)
        reply = Reply(code, enh, clean, stage, "", "", False, text)
        return InboundReject(
            ts,
            host,
            qid,
            program,
            action=action,
            stage=stage.upper() if stage in ("header", "body") else stage,
            client_name=cname,
            client_ip=cip,
            reply=reply,
            sender=sender,
            recipient=rcpt,
            helo=helo,
            proto=proto,
        )

    def _other(self, ts: float, host: str, program: str, msg: bytes) -> PostfixEvent | str:
        s = msg.decode("utf-8", "replace")
        if s.startswith("warning: ") and "SASL" in s:
            m = _SASL.match(s)
            if m is not None:
                return SaslFailure(
                    ts,
                    host,
                    "",
                    program,
                    client_name=m.group("name"),
                    client_ip=m.group("ip"),
                    method=m.group("method"),
                    detail=m.group("detail"),
                    sasl_username=m.group("user") or "",
                )
        if msg[:11] == b"connect to ":
            # smtp(8) logs connect failures without a queue id (ConnectClaims adds it)
            mx = self._mx(ts, host, "", program, msg)
            if mx is not None:
                return mx
        # "QID: <something we do not need>" (TLS chatter, warnings, statistics ...)
        if _IGNORE.match(s):
            return IGNORED
        c = s.find(": ")
        if _Q_MIN <= c <= _Q_MAX and s[:c].isalnum() and _IGNORE.match(s, c + 2):
            return IGNORED
        return "unknown postfix line"

    # -- public entry points -------------------------------------------------------------
    def parse_logline(
        self, line: LogLine, stats: ParseStats | None = None
    ) -> PostfixEvent | Unparsed | None:
        """Parse one :class:`LogLine` (e.g. from journald). None for ignored/foreign lines."""
        if stats is not None:
            stats.total += 1
        if not is_postfix(line.program):
            if stats is not None:
                stats.foreign += 1
                stats.program(line.program)
            return None
        out = self.message(line.ts, line.host, line.program, line.message.encode("utf-8"))
        if isinstance(out, str):
            if out == IGNORED:
                if stats is not None:
                    stats.ignored += 1
                return None
            if stats is not None:
                return stats.unparsed_line(line.source, line.offset, line.message, out)
            return Unparsed(line.source, line.offset, line.message[:2000], out)
        if stats is not None:
            stats.parsed += 1
        return out


# ------------------------------------------------------------------------------------------
# smtp(8)'s "connect to" lines: without a queue id
# ------------------------------------------------------------------------------------------

#: Held "connect to" lines per smtp process, and processes holding lines (beyond: the oldest
#: go on unclaimed). smtp_mx_address_limit is 5 by default.
MAX_HELD_PER_PROCESS = 32
MAX_HELD_PROCESSES = 4096


def session_key(raw: bytes, i: int) -> bytes | None:
    """``host program[pid`` of a raw syslog line whose tag ends at ``i`` (its ``]: ``) when
    the program is smtp(8) or lmtp(8) (``.../smtp[pid]``), else None. Lines of one process
    (one delivery after another) share it."""
    k = raw.rfind(b" ", 0, i)
    if k < 0:
        return None
    b = raw.rfind(b"[", k, i)
    if b < 5 or raw[b - 5 : b] not in (b"/smtp", b"/lmtp"):
        return None
    h = raw.rfind(b" ", 0, k)
    if h < 0:
        return None
    return raw[h + 1 : i]


def _body(raw: bytes, start: int) -> bytes:
    end = len(raw)
    if end and raw[end - 1] == 10:
        end -= 2 if end > 1 and raw[end - 2] == 13 else 1
    return raw[start:end]


class ConnectClaims:
    """Give smtp(8)'s ``connect to X[ip]:25: ...`` lines the queue id of their delivery.

    smtp(8) logs a failed connection without a queue id, for every MX it tries, the last one
    included; the reply lines of a non-final MX carry the queue id, and the last MX's failure
    is repeated in the recipients' status lines (measured on Postfix 3.7,
    ``tests/data/sources/mx-replies.log``). One smtp process handles one delivery at a time,
    so the next line of the same process (``host program[pid``, :func:`session_key`) that
    names a queue id is the delivery those connect lines belong to. This class holds each
    connect line until then and passes it on as ``QID: connect to ...``, except the last one
    when that next line is a status line whose text (in its last parentheses) is that very
    connect failure: the status line is its final form, and the connect line is dropped
    (counted in :attr:`twins`: read, understood, not needed). Lines never claimed (the log
    ends, the process is gone) go on as they are, without a queue id (see :meth:`release`).

    The same rule runs before the shard filter of ``mailwarden analyze`` (every worker holds
    every connect line; the one that gets the claiming line keeps it) and in C
    (``_postfixscan.c``, ``claims_*``).
    """

    __slots__ = ("held", "twins")

    def __init__(self) -> None:
        # key -> [(raw, i)], oldest process first
        self.held: dict[bytes, list[tuple[bytes, int]]] = {}
        self.twins = 0

    def hold(self, raw: bytes, i: int) -> list[bytes] | None:
        """``raw`` (tag ending at ``i``) is a ``connect to`` line: None when it is not
        smtp(8)'s (pass it on), else the lines to pass on now instead (usually none; the
        oldest held lines when a limit is reached)."""
        key = session_key(raw, i)
        if key is None:
            return None
        out: list[bytes] = []
        lst = self.held.get(key)
        if lst is None:
            if len(self.held) >= MAX_HELD_PROCESSES:
                first = next(iter(self.held))
                out.extend(r for r, _ in self.held.pop(first))
            self.held[key] = [(raw, i)]
        else:
            lst.append((raw, i))
            if len(lst) > MAX_HELD_PER_PROCESS:
                out.append(lst.pop(0)[0])
        return out

    def claim(self, raw: bytes, i: int) -> tuple[list[bytes], bool] | None:
        """``raw`` (tag ending at ``i``) while lines are held: None when it claims nothing,
        else (the held lines of its process given its queue id, to pass on before it; whether
        the last one was its twin and dropped)."""
        key = session_key(raw, i)
        if key is None or key not in self.held:
            return None
        q = qid_of(raw)  # its ``]: `` is at ``i``
        if q is None:
            return None
        j = i + 3 + len(q)
        lst = self.held.pop(key)
        twin = False
        last, li = lst[-1]
        if _body(raw, j + 2).endswith(b"(" + _body(last, li + 3) + b")"):
            lst.pop()
            twin = True
        return [r[: k + 3] + q + b": " + r[k + 3 :] for r, k in lst], twin

    def release(self) -> list[bytes]:
        """Every held line, as logged (oldest process first); nothing is held afterwards."""
        out = [r for lst in self.held.values() for r, _ in lst]
        self.held.clear()
        return out

    def lines(self, raws: Iterable[bytes]) -> Iterator[bytes]:
        """``raws`` with the connect lines claimed (held lines stay held at the end: call
        :meth:`release` when the source ends, if it ends)."""
        held = self.held
        for raw in raws:
            if raw[:1] == b"" or (b"]: c" not in raw and not held):
                yield raw
                continue
            i = raw.find(b"]: ")
            if i > 0:
                if raw.startswith(b"connect to ", i + 3):
                    out = self.hold(raw, i)
                    if out is not None:
                        yield from out
                        continue
                elif held:
                    got = self.claim(raw, i)
                    if got is not None:
                        yield from got[0]
                        if got[1]:
                            self.twins += 1
            yield raw


def parse_line(line: LogLine, stats: ParseStats | None = None) -> PostfixEvent | Unparsed | None:
    """Parse one :class:`LogLine` with a fresh parser (convenience; use a
    :class:`PostfixParser` or :func:`parse_lines` in loops)."""
    return PostfixParser().parse_logline(line, stats)


def parse_lines(
    lines: Iterable[bytes],
    *,
    env: Envelope | None = None,
    stats: ParseStats | None = None,
    parser: PostfixParser | None = None,
    start_offset: int | None = None,
    yield_unparsed: bool = False,
    shard: tuple[int, int] | None = None,
    claims: ConnectClaims | None = None,
) -> Iterator[PostfixEvent | Unparsed]:
    """The hot loop: raw syslog lines (bytes, with or without ``\\n``) -> Postfix events.

    Counters go to ``stats`` (created if None; pass one to read them). ``start_offset`` is the
    byte offset of the first line when the lines are consecutive in a source (offsets of
    unparsed samples are then exact), else offsets are -1. Unparsed lines are counted and
    sampled in ``stats``; they are also yielded when ``yield_unparsed`` is set. Safe to run on
    any subset of lines (e.g. one shard by :func:`qid_of` in a worker process).

    ``claims``: smtp(8)'s ``connect to`` lines get their queue id (:class:`ConnectClaims`;
    keep the same object for every chunk of one source; lines still held stay held). Offsets
    of the lines after a claimed one are then approximate.
    """
    if env is None:
        env = Envelope()
    if stats is None:
        stats = ParseStats()
    if parser is None:
        parser = PostfixParser()
    source = env.source
    sec = env.stamps.sec
    iso = env.stamps.iso_cache
    ptag = parser.tag
    tags = parser._tags
    ptag_of_program = parser.program
    hosts = env.hosts
    phost = env.host
    pmsg = parser.message
    offset = -1 if start_offset is None else start_offset
    track = start_offset is not None
    me, nshards = shard if shard is not None else (0, 1)
    total = parsed = ignored = foreign = ooo = 0
    latest = 0.0
    info: tuple[str, bool] | None
    twins0 = claims.twins if claims is not None else 0
    if claims is not None:
        if nshards > 1:  # each worker would count the twins: claim before sharding
            raise ValueError("claims and shard: claim the lines before sharding them")
        lines = claims.lines(lines)
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
            # -- envelope (inlined fast path of Envelope.split) --------------------------
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
                out = env.split(raw)  # stamp cache miss, RFC 3339, or a bad line
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
                info = ptag_of_program(program)
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
            if msg[:8] in _SKIP8 and msg[8:11] != b"to ":  # smtpd connect/disconnect
                ignored += 1
                continue
            ev = pmsg(ts, host, info[0], msg)
            if ev.__class__ is str:
                if ev == IGNORED:
                    ignored += 1
                    continue
                why = ev  # type: ignore[assignment]
                if track and not raw.endswith(b"\n"):
                    why = "truncated"
                u = stats.unparsed_line(source, this_offset, raw, why)  # type: ignore[arg-type]
                if yield_unparsed:
                    yield u
                continue
            parsed += 1
            yield ev  # type: ignore[misc]
    finally:
        if claims is not None:  # twins: read and understood, their status lines say it all
            total += claims.twins - twins0
            ignored += claims.twins - twins0
        stats.total += total
        stats.parsed += parsed
        stats.ignored += ignored
        stats.foreign += foreign
        stats.out_of_order += ooo
