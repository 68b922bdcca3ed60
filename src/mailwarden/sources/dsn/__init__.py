"""Bounce mail (DSN) parser: a bounce, feedback report or auto-reply -> one
:class:`mailwarden.events.BounceRecipient` per recipient, in the message's order.

Public API::

    report = parse_bounce(raw_bytes)          # BounceReport
    report = parse_bounce_file(path)          # same, from a file
    for r in report.recipients: r.recipient, r.reason, r.status, r.replycode, r.rhost ...

Structure (recipient, action, status, reply code, diagnostic, hosts, feedback type, auto-reply)
is read here; the reason that comes from the diagnostic TEXT is decided by the shared
classifier (see :mod:`mailwarden.sources.dsn.reason`). Modules: ``mime`` (stdlib email,
limits), ``rfc3464`` (delivery-status fields), ``text`` (the common human layout),
``formats`` (MTAs with layouts of their own), ``special`` (ARF, RFC 3834), ``parser``
(the pipeline), ``reason`` (structural reasons, classifier call site).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mailwarden.errors import SourceError
from mailwarden.events import BounceRecipient
from mailwarden.sources.dsn.reason import TextClassifier

__all__ = ["BounceReport", "TextClassifier", "parse_bounce", "parse_bounce_file"]


@dataclass(frozen=True, slots=True)
class BounceReport:
    """What one bounce message says. ``format`` names the layout that was recognised
    (``rfc3464``, ``arf``, ``rfc3834``, ``postfix``, ``exim`` ...), ``""`` for a mail that
    is no bounce (then ``recipients`` is empty)."""

    recipients: tuple[BounceRecipient, ...]
    format: str
    subject: str = ""
    defects: int = 0


def parse_bounce(data: bytes | str, *, classifier: TextClassifier | None = None) -> BounceReport:
    """Parse one message. Raises :class:`SourceError` for input that is not a mail at all or
    is too large; a mail that is not a bounce gives an empty report."""
    clf = classifier or _default_classifier()
    return _parse(data, clf, 0)


def _parse(data: bytes | str, clf: TextClassifier, depth: int) -> BounceReport:
    from mailwarden.sources.dsn import mime, parser

    out: list[BounceRecipient] = []
    fmt, subject, defects = "", "", 0
    for i, one in enumerate(mime.split_mbox(data)):
        try:
            mail = mime.load(one)
        except SourceError:
            if i == 0:
                raise
            continue  # a later message of an mbox that is not a mail: skip it
        f, recs = parser.extract(mail)
        got = parser.finalize(mail, f, recs, clf)
        for inner_data in (mail.attached, _inline_message(mail.long_text)):
            if got or not inner_data or depth >= 3:
                continue
            # a bounce forwarded as an attachment or pasted inline (by a user, a gateway, a
            # list, a forwarding ISP): read it
            try:
                inner = _parse(inner_data, clf, depth + 1)
                got, f = list(inner.recipients), inner.format
            except SourceError:
                pass
        seen = {(r.recipient, r.reason) for r in out}
        out.extend(r for r in got if (r.recipient, r.reason) not in seen)
        fmt = fmt or (f if got else "")
        subject = subject or mail.subject
        defects += mail.defects
    return BounceReport(tuple(out), fmt, subject, defects)


_INLINE = re.compile(r"^(?:From \S+\s+\S.*\d{4}|Return-Path:\s*<>)\s*\n(?=[A-Za-z-]+:)", re.M)


def _inline_message(text: str) -> bytes:
    """A whole message pasted into the text (it starts with an mbox ``From `` line or the
    ``Return-Path: <>`` of a bounce, followed by headers), or ``b""``."""
    m = _INLINE.search(text)
    if m is None or m.start() == 0:
        return b""
    return text[m.start() :].encode("utf-8", "replace")


def parse_bounce_file(path: str | Path, **kw: TextClassifier | None) -> BounceReport:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror}", source=str(p)) from exc
    try:
        return parse_bounce(data, **kw)
    except SourceError as exc:
        raise SourceError(str(exc), source=str(p)) from exc


_CLF: TextClassifier | None = None


def _default_classifier() -> TextClassifier:
    global _CLF
    if _CLF is None:
        _CLF = TextClassifier()
    return _CLF
