"""Typed records passed between stages (sources -> classify -> store -> policy -> report).

Every record is a frozen, slotted dataclass: cheap to create in the hot path of log parsing,
hashable, and impossible to mutate behind another stage's back. Times are POSIX seconds (UTC,
float). Text fields are ``str`` and never ``None``: an absent value is ``""``. Optional numbers
are ``None`` when absent.

Who produces what:

* ``sources`` (log readers) produce :class:`LogLine` and then the Postfix events
  (:class:`Arrival`, :class:`MessageIdSeen`, :class:`QueueActive`, :class:`Delivery`,
  :class:`BounceNotice`, :class:`Expired`, :class:`Removed`, :class:`InboundReject`,
  :class:`SaslFailure`) and :class:`Unparsed` for lines they could not read;
  the correlator folds them into :class:`Message` records.
* ``sources.dsn`` (bounce mail) produces :class:`BounceRecipient`.
* ``classify`` turns a :class:`Reply` plus context into a :class:`Classification`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# --------------------------------------------------------------------------------------
# Vocabulary shared by every stage
# --------------------------------------------------------------------------------------

#: Delivery outcome as Postfix logs it (``status=``), plus ``expired`` from qmgr.
Status = Literal["sent", "deferred", "bounced", "expired", "undeliverable", "deliverable"]

#: Who is to blame for a failure.
#: ``ours``: our IP, domain, content or configuration; ``recipient``: the address;
#: ``transient``: the receiver or the network, try again later; ``""`` for success.
Scope = Literal["ours", "recipient", "transient", ""]

#: Reasons, in Sisimai's vocabulary (https://libsisimai.org/en/reason/).
REASONS: tuple[str, ...] = (
    "authfailure",
    "badreputation",
    "blocked",
    "contenterror",
    "delivered",
    "emailtoolarge",
    "expired",
    "feedback",
    "filtered",
    "hasmoved",
    "hostunknown",
    "mailboxfull",
    "mailererror",
    "networkerror",
    "norelaying",
    "notaccept",
    "notcompliantrfc",
    "onhold",
    "policyviolation",
    "ratelimited",
    "rejected",
    "requireptr",
    "securityerror",
    "spamdetected",
    "suspend",
    "syntaxerror",
    "systemerror",
    "systemfull",
    "undefined",
    "userunknown",
    "vacation",
    "virusdetected",
)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One syslog/journald record, envelope split off, before Postfix-specific parsing."""

    ts: float  # POSIX seconds, UTC
    host: str  # the syslog host field (postlogd writes the first label of myhostname)
    program: str  # "postfix/smtp", "postfix-bulk/smtp", "postfix/suspended/smtp", "dovecot"
    pid: int | None
    message: str  # everything after "program[pid]: "
    source: str = ""  # file path or "journal"
    offset: int = -1  # byte offset of the line in its (decompressed) source, -1 if unknown


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply or a Postfix-generated reason, parsed.

    ``code`` is the basic reply code (``554``) or ``None`` when there is none (e.g. Postfix's
    own "Connection refused"). ``enhanced`` is the RFC 3463 code (``5.7.1``) or ``""``.
    ``text`` is the human text with the code and every inline multi-line prefix
    (``550-5.7.1``) removed, folded to one line. ``command`` is the SMTP stage the remote
    answered: ``"CONNECT"`` (greeting / refused to talk), ``"EHLO"``, ``"HELO"``, ``"MAIL FROM"``,
    ``"RCPT TO"``, ``"DATA"``, ``"end of DATA"``, ``"STARTTLS"``, ``"AUTH"`` ... or ``""``.
    ``host``/``ip`` name the remote server when the text says which one answered.
    ``remote`` is True when the text came from the remote server (``said:``, ``refused to talk
    to me:``), False when Postfix wrote it (connect errors, DNS, its own deferrals).
    """

    code: int | None
    enhanced: str
    text: str
    command: str = ""
    host: str = ""
    ip: str = ""
    remote: bool = False
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Classification:
    """What a non-success means. Produced by ``classify``, stored and reported downstream."""

    reason: str  # one of REASONS
    scope: Scope
    provider: str = ""  # provider name ("google", "swisscom") or organisational domain fallback
    issuer: str = ""  # blocklist / reputation issuer named in the reply ("spamhaus", "cloudmark")
    url: str = ""  # lookup / delisting URL named in the reply (or the issuer's default)
    cited_ip: str = ""  # the IP the receiver cites (usually ours)
    rule: str = ""  # id of the deciding pattern, e.g. "swisscom/not-allowed"
    internal: bool = False  # Postfix's or mailwarden's own deferral: never a provider rejection


# --------------------------------------------------------------------------------------
# Postfix log events (one per meaningful log line)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostfixEvent:
    """Base: every Postfix event knows when, where, which queue file and which program."""

    ts: float
    host: str
    qid: str  # queue id, "" for NOQUEUE lines
    program: str


@dataclass(frozen=True, slots=True)
class Arrival(PostfixEvent):
    """A message entered the queue: ``pickup`` (``uid=``) or ``smtpd`` (``client=``)."""

    uid: int | None = None  # pickup: local submitter uid
    sender: str = ""  # pickup logs from=<...>
    client_name: str = ""  # smtpd: client=name[ip]
    client_ip: str = ""
    client_port: int | None = None
    sasl_method: str = ""
    sasl_username: str = ""
    orig_qid: str = ""  # smtpd "orig_queue_id=" / "orig_client=" (re-injection through a filter)


@dataclass(frozen=True, slots=True)
class MessageIdSeen(PostfixEvent):
    """cleanup: ``message-id=<...>`` (maybe empty ``message-id=``)."""

    message_id: str = ""
    resent: bool = False


@dataclass(frozen=True, slots=True)
class QueueActive(PostfixEvent):
    """qmgr: ``from=<...>, size=N, nrcpt=N (queue active)``; logged again on every retry."""

    sender: str = ""
    size: int | None = None
    nrcpt: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery(PostfixEvent):
    """One delivery attempt for one recipient: smtp, lmtp, local, virtual, pipe, error, retry."""

    recipient: str = ""
    orig_recipient: str = ""
    relay: str = ""  # the raw relay= value ("none", "mx1.example.com[192.0.2.1]:25", "local")
    relay_host: str = ""  # "mx1.example.com" or, for relay=none, the host quoted in the reason
    relay_ip: str = ""
    relay_port: int | None = None
    conn_use: int | None = None
    delay: float | None = None
    delays: str = ""  # "0.03/0.02/0.01/0.03" as logged
    dsn: str = ""  # "5.7.1"
    status: str = ""  # Status
    text: str = ""  # the text inside the last parentheses, as logged
    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class MxReply(PostfixEvent):
    """smtp/lmtp giving up on one MX host before the next one (or before a deferral without a
    per-recipient status): ``host X[ip] said: ...``, ``host X[ip] refused to talk to me: ...``,
    ``lost connection with X[ip] while ...``, ``conversation with X[ip] timed out while ...``,
    ``connect to X[ip]:25: ...``, ``TLS is required, but ... host X[ip] ...``.

    A connection-level attempt: it names no recipient (it concerns the message's pending
    recipients at that MX) and never changes a recipient's final state. ``kind`` is ``said``,
    ``refused``, ``lost``, ``timeout``, ``connect`` or ``tls``; ``text`` the message after the
    queue id, as logged; ``qid`` is ``""`` for a ``connect to`` line whose process never named
    its queue id (see :class:`mailwarden.sources.postfix.ConnectClaims`).
    """

    relay_host: str = ""
    relay_ip: str = ""
    relay_port: int | None = None
    kind: str = ""
    text: str = ""
    reply: Reply | None = None

    def as_attempt(self) -> Delivery:
        """The same failure as a deferred attempt without a recipient, with the ``dsn=``
        Postfix logs for it at the last MX (:data:`MX_DSN`), so that a non-final reply and a
        status line of the same failure classify alike (report, store, breaker)."""
        return Delivery(
            self.ts, self.host, self.qid, self.program, relay_host=self.relay_host,
            relay_ip=self.relay_ip, relay_port=self.relay_port, dsn=MX_DSN.get(self.kind, ""),
            status="deferred", text=self.text, reply=self.reply,
        )  # fmt: skip


#: The ``dsn=`` Postfix logs for the same failure at the last MX (connection-level replies
#: carry none).
MX_DSN = {"connect": "4.4.1", "lost": "4.4.2", "timeout": "4.4.2"}


@dataclass(frozen=True, slots=True)
class BounceNotice(PostfixEvent):
    """bounce/defer/trace: ``sender non-delivery notification: NEWID`` and friends."""

    kind: Literal["non-delivery", "delay", "delivery", "success"] = "non-delivery"
    notice_qid: str = ""


@dataclass(frozen=True, slots=True)
class Expired(PostfixEvent):
    """qmgr: ``from=<...>, status=expired, returned to sender``."""

    sender: str = ""


@dataclass(frozen=True, slots=True)
class Removed(PostfixEvent):
    """qmgr: ``removed`` (the queue file is gone; the queue id may be reused later)."""


@dataclass(frozen=True, slots=True)
class Held(PostfixEvent):
    """``placed on hold`` / ``released from hold`` (postsuper, cleanup HOLD actions)."""

    released: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class InboundReject(PostfixEvent):
    """Our own smtpd/cleanup refusing or diverting mail (``NOQUEUE: reject: RCPT from ...``).

    These are inbound: what *we* refused, reported apart from what receivers refuse us.
    ``action`` is reject, defer, hold, discard, filter, redirect, warn or milter-reject.
    """

    action: str = "reject"
    stage: str = ""  # "RCPT", "CONNECT", "DATA", "END-OF-MESSAGE", "MAIL", "EHLO"
    client_name: str = ""
    client_ip: str = ""
    reply: Reply | None = None
    sender: str = ""
    recipient: str = ""
    helo: str = ""
    proto: str = ""


@dataclass(frozen=True, slots=True)
class SaslFailure(PostfixEvent):
    """smtpd: ``warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: ...``."""

    client_name: str = ""
    client_ip: str = ""
    method: str = ""
    detail: str = ""
    sasl_username: str = ""


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A line that could not be read. Kept (truncated) so it can be shown, never fatal."""

    source: str
    offset: int
    line: str  # at most 2,000 characters, decoded with errors="replace"
    why: str  # "not syslog", "unknown postfix line", "bad timestamp", "binary", "too long" ...


# --------------------------------------------------------------------------------------
# Correlated message (output of the correlator, input of the store)
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    """Everything the log says about one queue file, keyed by (host, qid, arrival).

    Mutable while the correlator builds it; treat as read-only once emitted.
    """

    host: str
    qid: str
    arrival: float  # ts of the first line seen for this queue file
    origin_kind: Literal["uid", "sasl", "client", "unknown"] = "unknown"
    uid: int | None = None
    client_name: str = ""
    client_ip: str = ""
    sasl_method: str = ""
    sasl_username: str = ""
    sender: str = ""
    message_id: str = ""
    size: int | None = None
    nrcpt: int | None = None
    attempts: list[Delivery] = field(default_factory=list)
    bounce_of: str = ""  # qid of the original message when this is a bounce notification we sent
    notices: list[BounceNotice] = field(default_factory=list)
    expired_at: float | None = None
    removed_at: float | None = None
    held: bool = False
    complete: bool = False  # True once "removed" was seen
    user: str = ""  # local user name of ``uid`` (pwd), "" when not resolvable
    mx_replies: list[MxReply] = field(default_factory=list)  # connection-level, non-final


# --------------------------------------------------------------------------------------
# Bounce mail (DSN) parser output
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BounceRecipient:
    """One failed (or reported) recipient found in a bounce, feedback or auto-reply message."""

    recipient: str
    reason: str
    scope: Scope
    status: str = ""  # enhanced status "5.1.1"
    replycode: str = ""  # "550"
    diagnostic: str = ""
    rhost: str = ""
    provider: str = ""
    action: str = ""  # failed, delayed, delivered, relayed, expanded
    lhost: str = ""  # reporting MTA
    issuer: str = ""
    url: str = ""
    feedback_type: str = ""


# --------------------------------------------------------------------------------------
# Egress (who opens connections to remote SMTP ports); produced by ``egress`` collectors
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EgressConnect:
    """One TCP connect (attempt) to a watched SMTP port, attributed to a process.

    ``source`` names the collector (``ebpf``, ``nflog``, ``sockdiag``); each fills what it can
    (NFLOG knows uid/gid and addresses but no pid; sock_diag has no failed attempts).
    ``verdict`` is ``allowed`` / ``blocked`` when the egress rule's NFLOG said so, ``""`` when
    unknown. ``mta`` is True when the uid is one of the MTA's users (counted, never alerted on).
    ``parents`` is the parent chain nearest first as ``(pid, comm)`` pairs.
    """

    ts: float
    source: str
    daddr: str
    dport: int
    family: int = 4  # 4 or 6
    saddr: str = ""
    sport: int | None = None
    pid: int | None = None
    ppid: int | None = None
    uid: int | None = None
    gid: int | None = None
    user: str = ""
    comm: str = ""
    exe: str = ""
    cmdline: tuple[str, ...] = ()
    cwd: str = ""
    parents: tuple[tuple[int, str], ...] = ()
    cgroup: str = ""  # cgroup v2 path, "" if unknown
    unit: str = ""  # systemd unit (from the cgroup), "" if none
    container: str = ""  # container id (from the cgroup), "" if none
    script: str = ""  # the script run by an interpreter / CGI / PHP-FPM worker, if found
    pool: str = ""  # PHP-FPM pool name
    netns: int | None = None  # network namespace inode
    verdict: str = ""  # "allowed", "blocked" or "" (unknown)
    mta: bool = False
    provider: str = ""  # destination provider (classify tables, PTR fallback)
    ptr: str = ""
    sk_uid: int | None = None  # the socket's owner as netfilter sees it (differs under setuid)
