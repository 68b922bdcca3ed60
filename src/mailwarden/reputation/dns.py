"""DNS lookups for the live checks, with errors kept apart from answers.

A lookup returns an :class:`Answer` whose ``status`` is ``ok`` (records), ``nxdomain`` (the name
does not exist), ``nodata`` (the name exists, no record of that type) or ``error`` (timeout,
SERVFAIL, refused, no nameserver...). Callers must never read an ``error`` as "not listed" or
"no record": a DNS error is reported as an error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from mailwarden import dnsutil
from mailwarden.config import DnsSettings

AnswerStatus = Literal["ok", "nxdomain", "nodata", "error"]


@dataclass(frozen=True, slots=True)
class Answer:
    name: str
    rtype: str
    status: AnswerStatus
    values: tuple[str, ...] = ()
    error: str = ""
    ttl: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _text(rtype: str, rr: object) -> str:
    if rtype == "TXT":
        strings = getattr(rr, "strings", ())
        return b"".join(strings).decode("utf-8", "replace")
    if rtype == "MX":
        return f"{rr.preference} {str(rr.exchange).rstrip('.').lower()}"  # type: ignore[attr-defined]
    if rtype in ("PTR", "CNAME", "NS"):
        return str(rr).rstrip(".").lower()
    return str(rr)


class Dns:
    """Thin wrapper: one resolver, typed answers, concurrent batches."""

    def __init__(self, resolver: dns.resolver.Resolver | None = None) -> None:
        self.resolver = resolver or dnsutil.resolver()

    @classmethod
    def from_settings(cls, settings: DnsSettings | None) -> Dns:
        return cls(dnsutil.resolver(settings))

    def query(self, name: str, rtype: str) -> Answer:
        rtype = rtype.upper()
        try:
            ans = self.resolver.resolve(name, rtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(name, rtype, "nxdomain")
        except dns.resolver.NoNameservers as exc:
            return Answer(name, rtype, "error", error=f"no nameserver answered: {exc}")
        except dns.exception.Timeout:
            return Answer(name, rtype, "error", error="timeout")
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return Answer(name, rtype, "error", error=f"{type(exc).__name__}: {exc}")
        if ans.rrset is None:
            return Answer(name, rtype, "nodata")
        values = tuple(_text(rtype, rr) for rr in ans.rrset)
        return Answer(name, rtype, "ok", values, ttl=ans.rrset.ttl)

    def ptr(self, ip: str) -> Answer:
        try:
            rev = dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text()
        except ValueError as exc:
            return Answer(ip, "PTR", "error", error=f"not an IP address: {exc}")
        return self.query(rev, "PTR")

    def addresses(self, name: str) -> tuple[Answer, Answer]:
        """A and AAAA answers for ``name``."""
        return self.query(name, "A"), self.query(name, "AAAA")

    def many(self, queries: Iterable[tuple[str, str]], workers: int = 16) -> list[Answer]:
        """Run queries concurrently; answers in the order of ``queries``."""
        qs = list(queries)
        if not qs:
            return []
        with ThreadPoolExecutor(max_workers=min(workers, len(qs))) as pool:
            return list(pool.map(lambda q: self.query(*q), qs))
