"""Strict validators for every value that may reach a Postfix map, main.cf, master.cf or a reply.

Anything that came from a log, a mail or a DNS answer passes one of these before it is written
into a Postfix file or returned from the socketmap server. They never repair input: a value is
returned normalised (lower-cased domain) or :class:`mailwarden.errors.ValidationError` is raised.
"""

from __future__ import annotations

import re

from mailwarden.errors import ValidationError

#: A dot-atom local part (no quotes, spaces or control characters), for fast checks.
LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_TRANSPORT = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_PARAM = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_QID = re.compile(r"^[0-9A-Za-z]{6,20}$")
_ENHANCED = re.compile(r"^4\.[0-9]{1,3}\.[0-9]{1,3}$")
# Reason texts are written by us (rule files); still keep them to printable ASCII without the
# characters that mean something to Postfix tables or the shell.
_REASON = re.compile(r"^[A-Za-z0-9 .,:;()/_@+=#-]{1,200}$")


_DOMAIN = re.compile(
    r"^(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.(?!-)(?![0-9]+$)[a-z0-9-]{1,63}(?<!-)$"
)


def domain(value: str) -> str:
    """A DNS domain name (ASCII or IDNA-encoded), at least two labels, no numeric top label;
    returned lower-case without a trailing dot."""
    if not isinstance(value, str) or not value or len(value) > 254:
        raise ValidationError(f"bad domain: {str(value)[:80]!r}")
    v = value.lower()
    if v.endswith("."):
        v = v[:-1]
    if not v.isascii():
        try:
            v = v.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValidationError(f"bad domain: {value[:80]!r}") from exc
    if len(v) > 253 or not _DOMAIN.fullmatch(v):
        raise ValidationError(f"bad domain: {value[:80]!r}")
    return v


def address(value: str) -> tuple[str, str]:
    """An envelope address ``local@domain``; returns ``(local, domain)`` with the domain normalised.

    Quoted local parts, address literals and anything with whitespace or control characters
    are refused: they never need a provider decision and cannot be written safely.
    """
    if not isinstance(value, str) or not value or len(value) > 320:
        raise ValidationError(f"bad address: {str(value)[:80]!r}")
    local, sep, dom = value.rpartition("@")
    if not sep or not local or not LOCAL_PART.fullmatch(local):
        raise ValidationError(f"bad address: {value[:80]!r}")
    return local, domain(dom)


def transport(value: str) -> str:
    """A master.cf service name we create (``mwslow10s1``)."""
    if not _TRANSPORT.fullmatch(value):
        raise ValidationError(f"bad transport name: {value!r}")
    return value


def parameter(value: str) -> str:
    """A main.cf parameter name."""
    if not _PARAM.fullmatch(value):
        raise ValidationError(f"bad parameter name: {value!r}")
    return value


def queue_id(value: str) -> str:
    """A Postfix queue id (short hex or long base-52)."""
    if not _QID.fullmatch(value):
        raise ValidationError(f"bad queue id: {value!r}")
    return value


def reason(value: str) -> str:
    """A reason text for a ``retry:`` answer (from rule files only, checked all the same)."""
    if not _REASON.fullmatch(value) or "  " in value:
        raise ValidationError(f"bad reason text: {value[:80]!r}")
    return value


def enhanced_4xx(value: str) -> str:
    """An RFC 3463 temporary detail code (``4.7.1``)."""
    if not _ENHANCED.fullmatch(value):
        raise ValidationError(f"bad temporary status code: {value!r}")
    return value


def retry_answer(code: str, text: str) -> str:
    """The ``retry:`` transport answer for a parked recipient."""
    return f"retry:{enhanced_4xx(code)} {reason(text)}"


def config_value(value: str) -> str:
    """A single-line main.cf/master.cf value: no newlines, NULs or other control characters."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(f"control character in configuration value: {value[:80]!r}")
    return value


def pcre_pattern(value: str) -> str:
    """A rule pattern made ready for a ``pcre:`` table line ``/PATTERN/``: one line, '/' escaped."""
    config_value(value)
    if not value or value.endswith("\\"):
        raise ValidationError(f"bad pattern: {value[:80]!r}")
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            out.append(value[i : i + 2])
            i += 2
            continue
        out.append("\\/" if c == "/" else c)
        i += 1
    return "".join(out)
