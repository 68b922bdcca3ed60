"""RFC 3464 (RFC 1894) delivery-status fields: ``Reporting-MTA``, ``Final-Recipient``,
``Action``, ``Status``, ``Remote-MTA``, ``Diagnostic-Code``, ``X-Postfix-*`` ...

:func:`parse_fields` reads them from the text of a message/delivery-status part, or from a
plain-text body where a broken MTA wrote them inline. It is lenient the way real DSNs need:
folded lines, missing blank lines between recipients, ``Status: 553 text`` instead of a code,
an address type missing before ``;``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailwarden.sources.dsn.record import ACTIONS, Rcpt, address, clean_host, find_status

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]{1,40})[ \t]*:[ \t]*(.*)$")

PER_MESSAGE = frozenset(
    {
        "reporting-mta",
        "received-from-mta",
        "arrival-date",
        "original-envelope-id",
        "dsn-gateway",
        "x-original-message-id",
        "x-postfix-queue-id",
        "x-postfix-sender",
    }
)
PER_RECIPIENT = frozenset(
    {
        "original-recipient",
        "final-recipient",
        "x-actual-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "will-retry-until",
        "final-log-id",
        "x-supplementary-info",
        "x-display-name",
        "x-powermta-bouncecategory",
    }
)


@dataclass(slots=True)
class Fields:
    """Per-message fields and one :class:`Rcpt` per recipient block, in order."""

    message: dict[str, str] = field(default_factory=dict)
    recipients: list[Rcpt] = field(default_factory=list)
    alt_errors: dict[int, str] = field(default_factory=dict)  # "Status: 553 text" per index


#: PowerMTA's own verdict per recipient (``X-PowerMTA-BounceCategory``), in Sisimai's words
#: (Sisimai v5 lhost/powermta.rb; PowerMTA User's Guide, "bounce categories").
POWERMTA_CATEGORY = {
    "bad-domain": "hostunknown",
    "bad-mailbox": "userunknown",
    "inactive-mailbox": "suspend",
    "message-expired": "expired",
    "no-answer-from-host": "networkerror",
    "policy-related": "policyviolation",
    "quota-issues": "mailboxfull",
    "routing-errors": "systemerror",
    "spam-related": "spamdetected",
}


def has_fields(text: str) -> bool:
    """True when ``text`` carries at least one recipient field."""
    return bool(re.search(r"(?im)^(?:final|original)-recipient[ \t]*:", text))


def _logical_lines(text: str) -> list[str]:
    """Unfold continuation lines of known fields; keep blank lines (block separators)."""
    out: list[str] = []
    last_is_field = False
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if line and line[0] in " \t" and out and last_is_field:
            out[-1] += " " + line.strip()
            continue
        m = _FIELD.match(line)
        last_is_field = bool(m and (m.group(1).lower() in PER_MESSAGE | PER_RECIPIENT))
        out.append(line)
    return out


def _typed(value: str) -> tuple[str, str]:
    """``"rfc822; a@b"`` -> ``("RFC822", "a@b")``; no type -> ``("", value)``."""
    if ";" in value:
        t, _, v = value.partition(";")
        if re.fullmatch(r"[A-Za-z0-9-]{1,20}", t.strip()):
            return t.strip().upper(), v.strip()
    return "", value.strip()


def parse_fields(text: str) -> Fields:
    """Read every delivery-status field in ``text``; recipients in the order written."""
    res = Fields()
    cur: Rcpt | None = None
    pending_alias = ""
    started_block = True  # a blank line was seen since the current recipient began
    for line in _logical_lines(text):
        if not line.strip():
            started_block = True
            continue
        m = _FIELD.match(line)
        if not m:
            continue
        name, value = m.group(1).lower(), m.group(2).strip()
        if name in PER_MESSAGE:
            res.message.setdefault(name, value)
            continue
        if name not in PER_RECIPIENT:
            continue
        if name == "original-recipient":
            _, v = _typed(value)
            if cur is not None and not cur.alias and not started_block:
                cur.alias = address(v) or v
            else:
                pending_alias = address(v) or v
            continue
        if name == "final-recipient":
            _, v = _typed(value)
            if v.startswith("|"):
                pending_alias = pending_alias or v  # delivered to a pipe: a program failed
            addr = address(v) if not v.startswith("|") else ""
            if not addr and "@" in pending_alias and "|" not in pending_alias:
                addr = pending_alias  # a source route or a local name: the original address
            if not addr:
                # "rfc822; |/usr/bin/procmail ..." (a pipe) or a local name: keep it
                # readable, the caller may resolve it through X-Failed-Recipients
                addr = v
            if (cur is not None and cur.recipient and cur.recipient != addr) or cur is None:
                cur = Rcpt()
                res.recipients.append(cur)
            elif cur.recipient == addr and not started_block:
                pass
            cur.recipient = addr
            if pending_alias:
                cur.alias = pending_alias
                pending_alias = ""
            started_block = False
            continue
        if cur is None:
            cur = Rcpt()
            res.recipients.append(cur)
            started_block = False
        if name == "x-actual-recipient":
            _, v = _typed(value)
            if not cur.alias and " " not in v:
                cur.alias = v
        elif name == "action":
            word = value.split()[0].lower().strip(";,.") if value.split() else ""
            cur.action = ACTIONS.get(word, word)
        elif name == "status":
            m2 = re.match(r"([245])\.(\d{1,3})\.(\d{1,3})", value)
            if m2:
                cur.status = m2.group(0)
            elif re.match(r"\d{3}\s+\S", value):
                res.alt_errors[len(res.recipients) - 1] = value
            else:
                cur.status = find_status(value)
        elif name == "remote-mta":
            _, v = _typed(value)
            cur.rhost = clean_host(v)
        elif name == "diagnostic-code":
            t, v = _typed(value)
            cur.spec = t
            cur.diagnostic = v if not cur.diagnostic else cur.diagnostic + " " + v
        elif name == "last-attempt-date":
            cur.date = value
        elif name == "x-powermta-bouncecategory":
            cur.reason = cur.reason or POWERMTA_CATEGORY.get(value.lower().strip(), "")
    return res
