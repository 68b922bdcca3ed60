"""Host and domain -> provider: MX-suffix rules from ``providers/*.toml``, PSL fallback.

Matching is exact on label boundaries: the suffix ``google.com`` (written ``.google.com`` or
``google.com`` in a table) matches ``google.com`` and ``aspmx.l.google.com`` but never
``evilgoogle.com``. Host names are folded to lower case and stripped of trailing dots and
brackets before lookup; the most specific (longest) suffix wins. Unknown hosts fall back to their
organisational domain from the bundled Public Suffix List (no network access, ever).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

_HOSTNAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*"
)


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def normalise_host(host: str) -> str:
    """``"MX1.Example.COM."`` -> ``"mx1.example.com"``; ``""`` for IP literals and junk."""
    h = host.strip().strip("[]<>").strip().rstrip(".").lower()
    if h.startswith("ipv6:"):
        return ""
    try:
        ipaddress.ip_address(h)
    except ValueError:
        pass
    else:
        return ""
    if not h or len(h) > 253 or not _HOSTNAME.fullmatch(h):
        return ""
    return h


def org_domain(host: str) -> str:
    """The organisational (registrable) domain of a host name, or ``""``."""
    h = normalise_host(host)
    if not h:
        return ""
    return _psl().privatesuffix(h) or ""


class SuffixIndex:
    """Map label-aligned suffixes to provider names; the longest matching suffix wins."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}

    def add(self, suffixes: Iterable[str], name: str) -> None:
        for s in suffixes:
            self._map[s.strip(".").lower()] = name

    def owner(self, suffix: str) -> str | None:
        return self._map.get(suffix)

    def lookup(self, host: str) -> str:
        """Provider name for a normalised host, or ``""``."""
        h = host
        while h:
            hit = self._map.get(h)
            if hit is not None:
                return hit
            dot = h.find(".")
            if dot < 0:
                return ""
            h = h[dot + 1 :]
        return ""

    def __len__(self) -> int:
        return len(self._map)
