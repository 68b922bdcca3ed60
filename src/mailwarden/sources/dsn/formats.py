"""Parsers for senders whose bounce does not follow the common layout of
:mod:`mailwarden.sources.dsn.text`, and structure a format carries beyond the layout.

Each parser is ``(mail, lines) -> list[Rcpt] | None``: ``None`` when the mail is not of its
format, else the records (maybe empty). :func:`parse` tries them in order. The knowledge here
is about formats (where the recipient and the error are written), not about reply phrases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from mailwarden.sources.dsn.mime import Mail
from mailwarden.sources.dsn.record import ACTIONS, Rcpt, address, clean_host

Parser = Callable[[Mail, list[str]], "list[Rcpt] | None"]


# --------------------------------------------------------------------------------------
# Amazon SES notifications delivered through SNS (JSON in a text/plain body)
# --------------------------------------------------------------------------------------


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON object(s) a body is made of (SNS wraps the SES message as a JSON string)."""
    start = text.find("{")
    if start < 0:
        return []
    try:
        obj = json.loads(text[start : text.rfind("}") + 1], strict=False)
    except ValueError:
        return []
    if not isinstance(obj, dict):
        return []
    out = [obj]
    inner = obj.get("Message")
    if isinstance(inner, str) and inner.lstrip().startswith("{"):
        try:
            msg = json.loads(inner, strict=False)
        except ValueError:
            msg = None
        if isinstance(msg, dict):
            out.append(msg)
    return out


def amazon_ses(mail: Mail, lines: list[str]) -> list[Rcpt] | None:
    """SES event JSON: ``notificationType``/``eventType`` Bounce, Complaint or Delivery."""
    if "notificationType" not in mail.text and "eventType" not in mail.text:
        return None
    objs = [o for o in _json_objects(mail.long_text) if "notificationType" in o or "eventType" in o]
    if not objs:
        return None
    ev = objs[-1]
    kind = str(ev.get("notificationType") or ev.get("eventType") or "")
    out: list[Rcpt] = []
    if kind == "Bounce":
        b = ev.get("bounce") or {}
        mta = clean_host(str(b.get("reportingMTA", "")))
        for r in b.get("bouncedRecipients") or []:
            if not isinstance(r, dict):
                continue
            out.append(
                Rcpt(
                    recipient=address(str(r.get("emailAddress", ""))),
                    action=ACTIONS.get(str(r.get("action", "")).lower(), ""),
                    status=str(r.get("status", "")),
                    diagnostic=str(r.get("diagnosticCode", "")),
                    lhost=mta,
                    rhost=clean_host(str(b.get("remoteMtaIp", ""))),
                )
            )
    elif kind == "Complaint":
        c = ev.get("complaint") or {}
        ftype = str(c.get("complaintFeedbackType", "") or "abuse")
        for r in c.get("complainedRecipients") or []:
            if isinstance(r, dict):
                out.append(
                    Rcpt(
                        recipient=address(str(r.get("emailAddress", ""))),
                        reason="feedback",
                        feedback_type=ftype,
                        diagnostic=str(c.get("userAgent", "")),
                    )
                )
    elif kind == "Delivery":
        d = ev.get("delivery") or {}
        for a in d.get("recipients") or []:
            out.append(
                Rcpt(
                    recipient=address(str(a)),
                    action="delivered",
                    diagnostic=str(d.get("smtpResponse", "")),
                    rhost=clean_host(str(d.get("remoteMtaIp", ""))),
                    lhost=clean_host(str(d.get("reportingMTA", ""))),
                )
            )
    return [r for r in out if r.recipient]


# --------------------------------------------------------------------------------------
# Google Groups: a post refused by a group (the group is the failed recipient)
# --------------------------------------------------------------------------------------


def google_groups(mail: Mail, lines: list[str]) -> list[Rcpt] | None:
    failed = [address(a) for a in re.split(r"[,\s]+", mail.header("x-failed-recipients"))]
    failed = [a for a in failed if a]
    if (
        not failed
        or not all(a.endswith("@googlegroups.com") for a in failed)
        or "mailer-daemon@googlemail.com" not in mail.sender.lower()
    ):
        return None
    text = " ".join(x.strip() for x in lines if x.strip())
    # the group refused the post (it does not exist or the sender may not post): Google's own
    # report, in the sender's language, so the structure decides
    return [Rcpt(recipient=a, diagnostic=text, reason="rejected") for a in failed]


# --------------------------------------------------------------------------------------
# Postfix smtpd "errors from" reports (a transcript of the inbound session)
# --------------------------------------------------------------------------------------


def postfix_smtpd_errors(mail: Mail, lines: list[str]) -> list[Rcpt] | None:
    if not re.match(r"Postfix SMTP server: errors from ", mail.subject):
        return None
    rcpt, err, cmd = "", "", ""
    last_in = ""
    for line in lines:
        m = re.match(r"^\s*In:\s+(.*)$", line)
        if m:
            last_in = m.group(1)
            r = re.search(r"RCPT\s+TO:\s*<([^>]+)>", last_in, re.I)
            if r:
                rcpt = address(r.group(1))
            continue
        m = re.match(r"^\s*Out:\s+([45]\d\d[ -].*)$", line)
        if m and not err:
            err = m.group(1)
            cmd = (last_in.split() or [""])[0].upper()
    if not rcpt or not err:
        return []
    names = {"RCPT": "RCPT TO", "MAIL": "MAIL FROM", "DATA": "DATA", ".": "end of DATA"}
    return [Rcpt(recipient=rcpt, diagnostic=err, command=names.get(cmd, cmd))]


FORMATS: tuple[tuple[str, Parser], ...] = (
    ("amazonses", amazon_ses),
    ("googlegroups", google_groups),
    ("postfix-smtpd", postfix_smtpd_errors),
)


def parse(mail: Mail, lines: list[str]) -> tuple[str, list[Rcpt]]:
    """(format name, records) of the first format that recognises ``mail``, else ("", [])."""
    for name, fn in FORMATS:
        recs = fn(mail, lines)
        if recs is not None:
            return name, recs
    return "", []


# --------------------------------------------------------------------------------------
# Structure some formats add to the common layout
# --------------------------------------------------------------------------------------

#: Gmail's "(state N)": the stage of the SMTP session at which the remote refused
#: (Sisimai's Lhost/Gmail.pm table).
_GMAIL_STATE = {
    "6": ("MAIL FROM", "systemerror"),
    "8": ("AUTH", "systemerror"),
    "9": ("AUTH", "systemerror"),
    "12": ("AUTH", "norelaying"),
    "13": ("EHLO", "blocked"),
    "14": ("RCPT TO", "userunknown"),
    "15": ("DATA", "filtered"),
    "17": ("DATA", "filtered"),
    "18": ("DATA", "filtered"),
}


def gmail_state(diagnostic: str) -> tuple[str, str]:
    """(SMTP command, reason) named by Gmail's ``(state N).`` in a diagnostic, or ("", "")."""
    m = re.search(r"\(state (\d+)\)\.?", diagnostic)
    return _GMAIL_STATE.get(m.group(1), ("", "")) if m else ("", "")


# --------------------------------------------------------------------------------------
# Which MTA wrote the bounce (informative: BounceReport.format)
# --------------------------------------------------------------------------------------

_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx, re.M))
    for name, rx in (
        ("postfix", r"This is the (?:mail system at host|Postfix program)|X-Postfix-"),
        ("exim", r"This message was created automatically by mail delivery software|"
                 r"SMTP error from remote (?:mail server|mailer)"),
        ("sendmail", r"-{3,} (?:Transcript of session follows|"
                     r"The following addresses had permanent fatal errors)"),
        ("qmail", r"This is the qmail-send program"),
        ("exchange", r"Diagnostic information for administrators|MSEXCH:|"
                     r"Delivery has failed to these recipients|"
                     r"did not reach the following recipient"),
        ("gmail", r"Delivery to the following recipients? (?:failed|has been delayed)|"
                  r"\*\* Address not found \*\*"),
        ("courier", r"running the Courier mail server"),
        ("domino", r"^was not delivered to:$|Domino Directory"),
        ("opensmtpd", r"This is the MAILER-DAEMON, please DO NOT REPLY"),
        ("dragonfly", r"This is the DragonFly Mail Agent"),
    )
)  # fmt: skip


def family(mail: Mail) -> str:
    """The MTA family that wrote the report, from its fixed wording, or ``""``."""
    head = mail.text[:20000]
    for name, rx in _FAMILIES:
        if rx.search(head):
            return name
    return ""
