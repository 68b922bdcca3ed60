"""The per-recipient working record of the bounce parser, and the small text helpers every
format parser shares (addresses, RFC 3463 status codes, SMTP reply codes, host names).

:class:`Rcpt` is mutable on purpose: the format parsers fill it in several passes (machine
readable fields, then the human text). It becomes a frozen
:class:`mailwarden.events.BounceRecipient` at the end (see :mod:`mailwarden.sources.dsn`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: RFC 3464 Action values and the misspellings seen in the wild.
ACTIONS = {
    "failed": "failed",
    "failure": "failed",
    "delayed": "delayed",
    "expired": "delayed",
    "delivered": "delivered",
    "deliverable": "delivered",
    "relayed": "relayed",
    "expanded": "expanded",
}


@dataclass(slots=True)
class Rcpt:
    """What a bounce says about one recipient, before classification."""

    recipient: str = ""
    alias: str = ""  # Original-Recipient / "expanded from"
    action: str = ""  # failed, delayed, delivered, relayed, expanded
    status: str = ""  # RFC 3463 "5.1.1"
    replycode: str = ""  # "550"
    diagnostic: str = ""
    spec: str = ""  # diagnostic type: SMTP, X-UNIX, X-POSTFIX
    rhost: str = ""  # the remote MTA that answered
    lhost: str = ""  # the reporting MTA
    command: str = ""  # SMTP command answered: CONN, EHLO, MAIL, RCPT, DATA
    reason: str = ""  # a reason the format itself decides (vacation, expired ...)
    feedback_type: str = ""
    date: str = ""


_ADDR = re.compile(
    r"[^\s<>\"'(),;:\[\]@]+@[-A-Za-z0-9_.]+\.[A-Za-z0-9-]+|[^\s<>\"'(),;:@]+@\[[0-9.:A-Fa-f]+\]"
)


def address(text: str) -> str:
    """The first e-mail address in ``text`` (``<a@b>``, ``rfc822; a@b``, ``"x" <a@b>``), or ``""``.

    The result is lower-cased in the domain only; quoting, angle brackets and a trailing dot
    are dropped.
    """
    if not text:
        return ""
    t = text.strip()
    m = re.search(r"<([^<>\s]+@[^<>\s]+)>", t)
    cand = m.group(1) if m else ""
    if not cand:
        m2 = _ADDR.search(t)
        cand = m2.group(0) if m2 else ""
    cand = cand.strip(" .'\"`<>").rstrip(".")
    cand = re.sub(r"^(?:@[^:@\s]+[,:])+", "", cand)  # RFC 821 source route "@relay:user@host"
    if cand.lower().startswith("mailto:"):
        cand = cand[7:]
    if "@" not in cand:
        return ""
    local, _, domain = cand.rpartition("@")
    if not local or not domain or ("." not in domain and not domain.startswith("[")):
        return ""
    return f"{local}@{domain.lower()}"


def is_address(text: str) -> bool:
    return bool(text) and address(text) == text


_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_STATUS_RES = (
    re.compile(r"[(]#([45]\.\d\.\d{1,3})[)]?"),  # (#5.5.1)
    re.compile(r"\b\d{3}[ -]#?([45]\.\d\.\d{1,3})\b"),  # 550-5.1.1 / 550 5.1.1
    re.compile(r"\b([45]\.\d\.\d{1,3})\b"),
    re.compile(r"\b(2\.[0-7]\.[0-7])\b"),
)


def find_status(text: str) -> str:
    """The RFC 3463 enhanced status code written in ``text``, ignoring IPv4 addresses and
    version numbers (``5.1.1.2``)."""
    if not text:
        return ""
    t = _IPV4.sub(" ", text)
    for rx in _STATUS_RES:
        for m in rx.finditer(t):
            code = m.group(1)
            # not part of a longer dotted number (a version, an address)
            before = t[max(0, m.start(1) - 1) : m.start(1)]
            after = t[m.end(1) : m.end(1) + 2]
            if before == "." or re.match(r"\.\d", after):
                continue
            return code
    return ""


_REPLY = re.compile(r"(?<![\d.\-])([45][0-5][0-9])(?![\d.]\d|\d)")
_REPLY_OK = re.compile(r"(?<![\d.\-])(25[0-3])(?![\d.]\d|\d)")


def find_replycode(text: str, klass: str = "") -> str:
    """The SMTP reply code (4xx/5xx, else 250-253) in ``text``, ignoring IPv4 addresses; with
    ``klass`` ("4", "5") the first code of that class (a transcript holds several)."""
    if not text or text.upper().startswith("X-UNIX;"):
        return ""
    t = _IPV4.sub(" ", text)
    t = re.sub(r"\b\d+\.\d+\.\d+\b", " ", t)  # enhanced codes and versions
    if klass:
        for hit in _REPLY.finditer(t):
            if hit.group(1).startswith(klass):
                return hit.group(1)
    m = _REPLY.search(t) or _REPLY_OK.search(t)
    return m.group(1) if m else ""


def sweep(text: str) -> str:
    """Fold whitespace, drop MIME boundary debris (``--=_...``) at the end."""
    t = re.sub(r"\s+", " ", text or "").strip()
    t = re.sub(r"\s--[-=_0-9A-Za-z.:/]+--?\s*$", "", t).strip()
    t = re.sub(r"\s--[-=_0-9A-Za-z.:/]{10,}\s.*$", "", t).strip()
    return t


def clean_host(host: str) -> str:
    """``"dns; mx.example.com. (192.0.2.1)"`` -> ``mx.example.com``; ``[192.0.2.1]`` -> IP."""
    h = (host or "").strip()
    h = re.sub(r"^[A-Za-z][A-Za-z0-9-]{0,20}\s*;\s*", "", h)  # "dns;", "dsn;", "x-local-hostname;"
    h = h.strip().strip("[]()<>")
    if "=" in h.split(" ", 1)[0]:
        h = h.split(" ", 1)[0].rsplit("=", 1)[1]
    h = h.split()[0] if h.split() else ""
    h = h.strip("[]()<>;,").rstrip(".").lower()
    if h.startswith("ipv6:"):
        h = h[5:]
    return h if re.fullmatch(r"[a-z0-9_.:\-]+", h) else ""


_RECEIVED_FROM_BY = re.compile(r"^from\s+(.+?)\s+by\s+(\S+)", re.I | re.S)
_RECEIVED_BY = re.compile(r"\bby\s+(\S+)", re.I)


def received_hosts(value: str) -> tuple[str, str]:
    """(from, by) host names of one Received header value (Sisimai's simple reading)."""
    if re.search(r"qmail\s+.+invoked\s+", value):
        return "", ""
    m = _RECEIVED_FROM_BY.match(value.strip())
    frm, by = "", ""
    if m:
        frm, by = m.group(1), m.group(2)
    else:
        m2 = _RECEIVED_BY.search(value)
        if m2:
            by = m2.group(1)
            frm = by
    names: list[str] = []
    addrs: list[str] = []
    for tok in frm.split():
        t = tok.strip("()[];")
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", t):
            addrs.append(t)
        elif "." in t:
            names.append(t)
    if names:
        frm = names[0]
    else:
        public = [
            a for a in addrs if not re.match(r"(10|127)\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.", a)
        ]
        frm = public[0] if public else (addrs[-1] if addrs else "")
    return clean_host(frm), clean_host(by)
