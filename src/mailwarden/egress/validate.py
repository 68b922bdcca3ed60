"""Strict validators for everything that goes into a firewall rule or a BPF map.

Nothing from a log, a mail, a DNS answer or the command line reaches an nft/iptables rule without
passing one of these. They accept a narrow, documented grammar and raise
:class:`mailwarden.errors.ValidationError` otherwise; they never try to "clean up" a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mailwarden.errors import ValidationError

# POSIX portable user names (what useradd accepts by default on Debian, minus the trailing $
# of Samba machine accounts): must start with a letter or underscore.
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_TABLE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_:.-]{1,24}")


def port(value: object) -> int:
    """A TCP port 1..65535 given as int or decimal string (no sign, no spaces)."""
    if isinstance(value, bool):
        raise ValidationError(f"invalid port: {value!r}")
    if isinstance(value, int):
        p = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        p = int(value)
    else:
        raise ValidationError(f"invalid port: {value!r}")
    if not 1 <= p <= 65535:
        raise ValidationError(f"port out of range: {value!r}")
    return p


def ports(values: Iterable[object]) -> tuple[int, ...]:
    """A non-empty set of ports, sorted, without duplicates."""
    out = tuple(sorted({port(v) for v in values}))
    if not out:
        raise ValidationError("no ports given")
    return out


def user(value: object) -> str | int:
    """A user name (``postfix``) or a numeric uid (``102``, 0..2**32-2). Returns name or int."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < 2**32 - 1:
            return value
        raise ValidationError(f"uid out of range: {value!r}")
    if isinstance(value, str) and value.isascii():
        if value.isdigit() and len(value) <= 10:
            return user(int(value))
        if _USER_RE.fullmatch(value):
            return value
    raise ValidationError(f"invalid user name: {value!r}")


def uid_of(value: object) -> int:
    """Validate a user and resolve it to a uid (the name must exist on this system)."""
    import pwd

    u = user(value)
    if isinstance(u, int):
        return u
    try:
        return pwd.getpwnam(u).pw_uid
    except KeyError:
        raise ValidationError(f"no such user: {u!r}") from None


def table_name(value: object) -> str:
    """An nft table name we own (lower-case identifier)."""
    if isinstance(value, str) and _TABLE_RE.fullmatch(value):
        return value
    raise ValidationError(f"invalid table name: {value!r}")


def nflog_group(value: object) -> int:
    """An NFLOG group number 0..65535."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return value
    raise ValidationError(f"invalid NFLOG group: {value!r}")


def log_prefix(value: object) -> str:
    """A log prefix: letters, digits and ``_:.-`` only, at most 24 characters."""
    if isinstance(value, str) and _PREFIX_RE.fullmatch(value):
        return value
    raise ValidationError(f"invalid log prefix: {value!r}")
