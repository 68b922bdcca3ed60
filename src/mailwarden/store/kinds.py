"""Rejection *kinds*: one normalised form of a reply, so that a million "User unknown" bounces
become one row in ``rejections`` with a count, and attempts reference it.

Normalising removes what varies between occurrences of the same refusal: addresses, IPs, queue
and session ids, numbers; the rest (lower-cased, whitespace folded) plus the reply code, the
enhanced status and the classification is hashed into :func:`kind_key`.
"""

from __future__ import annotations

import hashlib
import re

_ADDR = re.compile(r"<[^<>\s]*@[^<>\s]*>|[\w.+=-]+@[\w-]+(?:\.[\w-]+)+")
_IP6 = re.compile(r"\b[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7}\b", re.I)
_IP4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
# Tokens mixing letters and digits, 8+ long: queue ids, session ids ("a640c23a62f3-a8d2c3"),
# base64 tracking ids. Dotted codes like 5.7.1 are too short to match.
_TOKEN = re.compile(r"\b(?=[\w.-]*\d)(?=[\w.-]*[A-Za-z])[\w.-]{8,}\b")
_NUM = re.compile(r"\d+")
_WS = re.compile(r"\s+")

MAX_NORMALISED = 400


def normalise_reply(text: str) -> str:
    """The part of a reply text that identifies its kind.

    >>> normalise_reply("550 5.1.1 <bob@example.org>: User unknown (from 192.0.2.7)")
    '550 5.1.1 <addr>: user unknown (from <ip>)'
    """
    s = _ADDR.sub("<addr>", text)
    s = _IP4.sub("<ip>", s)
    s = _IP6.sub("<ip>", s)
    s = _TOKEN.sub("<id>", s)
    s = _NUM.sub(lambda m: m.group(0) if len(m.group(0)) <= 3 else "<n>", s)
    s = _WS.sub(" ", s).strip().lower()
    return s[:MAX_NORMALISED]


def kind_key(code: int | None, enhanced: str, reason: str, internal: bool, normalised: str) -> str:
    """Stable 20-hex-digit key of a rejection kind (unique per provider in the store)."""
    raw = f"{code or ''}|{enhanced}|{reason}|{int(internal)}|{normalised}"
    return hashlib.blake2b(raw.encode("utf-8", "replace"), digest_size=10).hexdigest()
