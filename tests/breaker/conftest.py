"""Helpers for the breaker tests: replies and classifications built from rule samples."""

from __future__ import annotations

import re

from mailwarden.events import Classification, Reply

_CODE = re.compile(r"^(\d{3})(?:[ -](\d\.\d{1,3}\.\d{1,3}))?\s*(.*)$", re.S)


def reply_from_text(text: str, command: str = "RCPT TO", remote: bool = True) -> Reply:
    """Split ``"554 5.7.1 text"`` the way the log parser does (code, enhanced, text)."""
    m = _CODE.match(text)
    if not m:
        return Reply(None, "", text, command=command, remote=remote, raw=text)
    return Reply(
        int(m.group(1)), m.group(2) or "", m.group(3), command=command, remote=remote, raw=text
    )


def classification(
    reason: str = "blocked", scope: str = "ours", issuer: str = "", internal: bool = False
) -> Classification:
    return Classification(
        reason=reason,
        scope=scope,
        issuer=issuer,  # type: ignore[arg-type]
        internal=internal,
    )
