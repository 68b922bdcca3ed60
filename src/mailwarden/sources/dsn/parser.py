"""The bounce parser pipeline: decoded mail -> one :class:`Rcpt` per recipient -> frozen
:class:`mailwarden.events.BounceRecipient` records.

Order of reading (first that yields recipients wins, machine-readable beats text):

1. ARF feedback report (message/feedback-report) -> ``feedback``;
2. RFC 3464 delivery-status fields, completed by the human text of the same mail (the text
   often carries the remote reply in full where the DSN has a truncated or local one);
3. the human text alone: a format parser of :mod:`~mailwarden.sources.dsn.formats` when the
   mail comes from an MTA with a layout of its own, else the common layout
   (:func:`~mailwarden.sources.dsn.text.scan`);
4. an automatic reply (RFC 3834) -> ``vacation``;
5. ``X-Failed-Recipients`` with whatever explanation the text gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mailwarden.errors import TableError
from mailwarden.events import BounceRecipient, Reply
from mailwarden.sources.dsn import formats, special
from mailwarden.sources.dsn.mime import Mail
from mailwarden.sources.dsn.reason import TextClassifier, decide
from mailwarden.sources.dsn.record import (
    Rcpt,
    address,
    clean_host,
    find_replycode,
    find_status,
    received_hosts,
    sweep,
)
from mailwarden.sources.dsn.rfc3464 import has_fields, parse_fields
from mailwarden.sources.dsn.text import (
    apply_transcript,
    cut,
    explain,
    from_transcript,
    scan,
    scan_sentences,
)
from mailwarden.sources.reply import parse_reply


@dataclass(frozen=True, slots=True)
class Wording:
    id: str
    reason: str
    pattern: re.Pattern[str]


@lru_cache(maxsize=4)
def _wordings(etc_key: str) -> tuple[Wording, ...]:
    from mailwarden.tables import load_merged

    data: dict[str, Any] = load_merged("dsn")
    out: list[Wording] = []
    for item in data.get("wording", []):
        try:
            out.append(
                Wording(
                    str(item["id"]), str(item["reason"]), re.compile(str(item["pattern"]), re.I)
                )
            )
        except (KeyError, re.error) as exc:
            raise TableError(f"dsn.toml: wording {item.get('id', '?')!r}: {exc}") from exc
    return tuple(out)


def wordings() -> tuple[Wording, ...]:
    """The reporting-MTA wordings of ``data/dsn.toml`` (merged with the local table)."""
    from mailwarden.tables import etc_dir

    return _wordings(str(etc_dir()))


def wording_reason(text: str) -> str:
    for w in wordings():
        if w.pattern.search(text):
            return w.reason
    return ""


_DELAY_SUBJECT = re.compile(
    r"^(?:warning:\s+message\s+\S+\s+delayed|delayed\s+mail|delivery\s+delayed|"
    r"delivery\s+status\s+notification\s+\(delay\)|.*\bstill\s+being\s+retried|"
    r"warning:\s+could\s+not\s+send\s+message|warning\s*-+\s*could\s+not\s+send)",
    re.I,
)
_DELAY_BODY = re.compile(
    r"this\s+is\s+a\s+warning\s+(?:message\s+)?only|has\s+not\s+yet\s+been\s+delivered|"
    r"delivery\s+attempts\s+will\s+continue|will\s+(?:continue\s+to\s+)?(?:retry|try\s+again)|"
    r"you\s+do\s+not\s+need\s+to\s+resend",
    re.I,
)


def is_delay_notice(mail: Mail) -> bool:
    """A warning that delivery is late, not a failure (Exim, Postfix, Sendmail, Gmail)."""
    return bool(_DELAY_SUBJECT.search(mail.subject) or _DELAY_BODY.search(mail.text[:5000]))


def extract(mail: Mail) -> tuple[str, list[Rcpt]]:
    """Find the recipients and what the mail says about each; returns (format, records)."""
    fmt, recs = _extract(mail)
    if fmt in ("text", "rfc3464"):
        fmt = formats.family(mail) or fmt
    if recs and is_delay_notice(mail):
        for r in recs:
            if not r.action and not r.reason:
                r.action = "delayed"
    return fmt, recs


def _extract(mail: Mail) -> tuple[str, list[Rcpt]]:
    if special.is_arf(mail):
        return "arf", special.parse_arf(mail)
    if special.is_unsubscribe(mail):
        return "arf", special.parse_unsubscribe(mail)

    lines = cut(mail.text)
    fmt, text_recs = formats.parse(mail, lines)
    if not fmt and not mail.status and special.is_autoreply(mail) and not has_fields(mail.text):
        return "rfc3834", special.parse_autoreply(mail)
    if not fmt:
        fmt, text_recs = "text", scan(lines)
        apply_transcript(text_recs, lines)
        if not text_recs:
            text_recs = from_transcript(lines)
        if not text_recs and not mail.status:
            text_recs = scan_sentences(lines)

    status_text = mail.status
    if not status_text and has_fields("\n".join(lines) if lines else mail.text):
        status_text = mail.text if not lines else "\n".join(mail.text.split("\n"))
    if status_text:
        fields = parse_fields(status_text)
        if fields.recipients:
            recs = _merge(fields.recipients, text_recs, fields.message, _failed(mail))
            for i, alt in fields.alt_errors.items():
                if 0 <= i < len(recs) and not recs[i].diagnostic:
                    recs[i].diagnostic = alt
            apply_transcript(
                [r for r in recs if not r.diagnostic.strip() or r.diagnostic.strip().isdigit()],
                lines,
            )
            return (fmt if fmt != "text" else "rfc3464"), recs

    recs = [r for r in text_recs if r.recipient]
    if recs:
        return fmt, recs
    if special.is_autoreply(mail):
        return "rfc3834", special.parse_autoreply(mail)
    failed = _failed(mail)
    if failed and _looks_like_bounce(mail):
        diag = sweep(" ".join(x for x in lines if x.strip()))
        return fmt, [Rcpt(recipient=a, diagnostic=diag) for a in dict.fromkeys(failed)]
    attached_bounce = re.search(
        r"report|mailer-daemon|postmaster",
        mail.original.get("content-type", "") + mail.original.get("from", ""),
        re.I,
    )
    if _looks_like_bounce(mail) and not attached_bounce:
        # last resort (Sisimai's too): the To: of the returned message, attached or inline
        to = address(mail.original.get("to", ""))
        if not to:
            rest = mail.text.split("\n")[len(lines) :]
            to = next((address(x[3:]) for x in rest if x[:3].lower() == "to:"), "")
        if to:
            diag = sweep(" ".join(x for x in lines if x.strip()))
            return fmt, [Rcpt(recipient=to, diagnostic=diag)]
    return "", []


def _failed(mail: Mail) -> list[str]:
    """The addresses of ``X-Failed-Recipients`` (Exim, Gmail ...)."""
    out = [address(a) for a in re.split(r"[,\s]+", mail.header("x-failed-recipients"))]
    return [a for a in dict.fromkeys(out) if a]


def _looks_like_bounce(mail: Mail) -> bool:
    frm = mail.sender.lower()
    return bool(
        re.search(r"\b(?:postmaster|mailer-daemon|mail delivery|root)\b", frm)
        or re.search(
            r"deliver|undeliver|failure|returned|bounce|undelivered|notice", mail.subject, re.I
        )
        or mail.header("return-path").strip() in ("<>", "")
    )


def _merge(
    dsn: list[Rcpt], text: list[Rcpt], message: dict[str, str], failed: list[str]
) -> list[Rcpt]:
    """Complete the DSN records with the human text (matched by address, else by position)."""
    by_addr = {r.recipient.lower(): r for r in text if r.recipient}
    by_alias = {r.alias.lower(): r for r in text if r.alias}
    lhost = clean_host(message.get("reporting-mta", ""))
    out: list[Rcpt] = []
    for i, d in enumerate(dsn):
        t = (
            by_addr.get(d.recipient.lower())
            or by_addr.get(d.alias.lower())
            or by_alias.get(d.recipient.lower())
        )
        if t is None and len(dsn) == len(text):
            t = text[i]
        if t is None and len(text) == 1 and len(dsn) == 1:
            t = text[0]
        if "@" not in d.recipient:
            # Final-Recipient is a pipe or a local name: the text or the alias names the address
            if d.recipient.startswith("|") and not d.alias.startswith("|"):
                d.alias = d.recipient
            d.recipient = (
                (t.recipient if t is not None else "")
                or (d.alias if "@" in d.alias and "|" not in d.alias else "")
                or (failed[i] if i < len(failed) and len(failed) == len(dsn) else d.recipient)
            )
        if t is not None:
            _complete(d, t)
        d.lhost = d.lhost or lhost
        out.append(d)
    return out


def _complete(d: Rcpt, t: Rcpt) -> None:
    dd, td = d.diagnostic.strip(), t.diagnostic.strip()
    local = d.spec.startswith("X-UNIX")
    if td and (
        not dd
        or re.fullmatch(r"\d+", dd)  # an exit status ("X-Unix; 77"): the text says more
        or (len(td) > len(dd) and _norm(dd) in _norm(td))
        # the DSN has the local summary, the text the remote reply ("554 5.7.1 ...")
        or (not local and not find_replycode(dd) and find_replycode(explain(td).text))
    ):
        d.diagnostic = td
    if not d.diagnostic.strip() and td:
        d.diagnostic = td
    d.rhost = d.rhost or t.rhost
    d.command = d.command or t.command
    d.reason = d.reason or t.reason
    if not d.status and t.status:
        d.status = t.status
    if not d.alias:
        d.alias = t.alias


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", s.lower())


#: Characters of diagnostic kept and classified per recipient: an SMTP reply is at most a few
#: lines of 512 octets; beyond that it is quoted mail or junk, and costs the regexes time.
MAX_DIAGNOSTIC = 2000

_POSTFIX_OWN = re.compile(
    r"^(?:host \S+\[|connect to |lost connection with |conversation with |"
    r"delivery temporarily suspended: |Host or domain name not found)"
)


def _reply(raw: str, text: str, code: str, command: str, host: str, remote: bool) -> Reply:
    """The diagnostic as a :class:`Reply` for the classifier: Postfix's own wording goes
    through the shared reply parser whole; other formats after their prefixes are cut."""
    rp = parse_reply(raw if _POSTFIX_OWN.match(raw) else text)
    return Reply(
        code=rp.code if rp.code is not None else (int(code) if code else None),
        enhanced=rp.enhanced,
        text=rp.text or text,
        command=rp.command or command,
        host=rp.host or host,
        ip=rp.ip,
        remote=rp.remote or remote,
        raw=raw,
    )


def finalize(
    mail: Mail, fmt: str, recs: list[Rcpt], classifier: TextClassifier
) -> list[BounceRecipient]:
    """Clean each record, decide its reason, freeze it."""
    out: list[BounceRecipient] = []
    fallback_rhost = ""
    if mail.received:
        frm, by = received_hosts(mail.received[-1])
        fallback_rhost = by if "." in by else frm
    fallback_lhost = received_hosts(mail.received[0])[1] if mail.received else ""
    seen: set[str] = set()
    for r in recs:
        rcpt = address(r.recipient) or r.recipient.strip()
        if not rcpt or rcpt.lower() in seen:
            continue
        seen.add(rcpt.lower())
        raw = sweep(r.diagnostic[: MAX_DIAGNOSTIC * 4])[:MAX_DIAGNOSTIC]
        ex = explain(raw)
        text = sweep(ex.text)
        # drop RFC 3463 multi-line prefixes inside the text: "550-5.7.1 " -> " "
        text = re.sub(r"(?<=\s)[245]\d\d[- ](?:[245]\.\d{1,3}\.\d{1,3}\s)?(?=\S)", "", " " + text)
        text = text.strip() or sweep(ex.text)
        status = r.status
        found = find_status(raw)
        if found and (
            not status
            or (
                found[0] == status[0]
                and (
                    re.fullmatch(r"[45]\.[1-9]\.[1-9]\d*", found)
                    or (status.endswith(".0.0") and not found.endswith(".0.0"))
                )
            )
        ):
            # the remote reply's own code is more precise than the reporting MTA's summary
            status = found
        code = find_replycode(raw, status[:1]) if r.reason not in ("feedback", "vacation") else ""
        if code and status and code[0] != status[0]:
            code = ""
        if status.startswith("2.") and not code and r.action == "delivered":
            code = find_replycode(raw)
        rhost = r.rhost or ex.rhost or r.lhost or fallback_rhost
        state_cmd, state_reason = formats.gmail_state(raw)
        reason_hint = r.reason or state_reason
        if not reason_hint and r.action != "delivered":
            reason_hint = wording_reason(raw)
            if not reason_hint and (r.alias.startswith("|") or r.recipient.startswith("|")):
                reason_hint = "mailererror"
        command = r.command or state_cmd or ex.command
        work = Rcpt(
            recipient=rcpt,
            alias=r.alias,
            action=r.action,
            status=status,
            replycode=code,
            diagnostic=raw,
            spec=r.spec,
            rhost=rhost,
            lhost=r.lhost,
            command=command,
            reason=reason_hint,
            feedback_type=r.feedback_type,
        )
        reply = _reply(raw, text, code, command, rhost, ex.remote)
        provider = classifier.provider(rhost, rcpt)
        v = decide(work, reply, classifier, provider)
        action = r.action or (
            "delayed"
            if v.reason == "expired" and status.startswith("4.")
            else "failed"
            if status[:1] in ("4", "5")
            else ""
        )
        out.append(
            BounceRecipient(
                recipient=rcpt,
                reason=v.reason,
                scope=v.scope,
                status=status,
                replycode=code,
                diagnostic=raw,
                rhost=rhost,
                provider=v.provider,
                action=action,
                lhost=r.lhost or fallback_lhost,
                issuer=v.issuer,
                url=v.url,
                feedback_type=r.feedback_type,
            )
        )
    return out
