"""Recipient domain -> primary MX hosts, resolved with dnspython and cached by TTL.

Used on the socketmap's hot path, so a cached answer is a dict lookup, concurrent misses for one
domain share one query, and a failing or slow DNS never blocks for longer than the caller's
deadline (the caller answers NOTFOUND and the query keeps running in the background, filling the
cache for the next lookup). Only the hosts of the lowest preference are returned: that is where
Postfix delivers first. A domain without MX records gets its implicit MX (itself); a null MX
(``MX 0 .``) or NXDOMAIN gets ``()``.
The resolvers come from :mod:`mailwarden.dnsutil` (``[dns]``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from functools import partial

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from mailwarden.errors import ValidationError
from mailwarden.postfix import validate

Hosts = tuple[str, ...]


class MxCache:
    """Bounded TTL cache of primary MX hosts per domain."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        *,
        min_ttl: float = 30.0,
        max_ttl: float = 3600.0,
        negative_ttl: float = 60.0,
        error_ttl: float = 15.0,
        max_entries: int = 50_000,
    ) -> None:
        self.resolver = resolver
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.error_ttl = error_ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, Hosts]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Hosts]] = {}
        self.queries = 0
        self.errors = 0

    def cached(self, domain: str, now: float | None = None) -> Hosts | None:
        """The cached primary MX hosts, or None on a miss or an expired entry."""
        hit = self._cache.get(domain)
        if hit is None:
            return None
        if hit[0] < (time.monotonic() if now is None else now):
            return None
        return hit[1]

    def put(self, domain: str, hosts: Hosts, ttl: float) -> None:
        self._cache[domain] = (time.monotonic() + ttl, hosts)
        self._cache.move_to_end(domain)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def resolve(self, domain: str) -> asyncio.Task[Hosts]:
        """Start (or join) the query for ``domain``; the task fills the cache when done."""
        task = self._inflight.get(domain)
        if task is None:
            task = asyncio.ensure_future(self._query(domain))
            self._inflight[domain] = task
            task.add_done_callback(partial(self._done, domain))
        return task

    def _done(self, domain: str, _task: asyncio.Task[Hosts]) -> None:
        self._inflight.pop(domain, None)

    async def close(self) -> None:
        """Cancel the queries still running (on shutdown)."""
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _query(self, domain: str) -> Hosts:
        self.queries += 1
        try:
            ans = await self.resolver.resolve(domain, "MX", search=False)
        except dns.resolver.NoAnswer:
            self.put(domain, (domain,), self.negative_ttl)  # implicit MX: the domain itself
            return (domain,)
        except dns.resolver.NXDOMAIN:
            self.put(domain, (), self.negative_ttl)
            return ()
        except (dns.exception.DNSException, OSError):
            self.errors += 1
            self.put(domain, (), self.error_ttl)
            return ()
        hosts, ttl = primary_hosts(ans)
        self.put(domain, hosts, min(max(ttl, self.min_ttl), self.max_ttl))
        return hosts


def primary_hosts(ans: dns.resolver.Answer) -> tuple[Hosts, float]:
    """The validated MX hosts of the lowest preference in an MX answer, and its TTL."""
    best: int | None = None
    hosts: list[str] = []
    for rr in ans:
        if rr.rdtype != dns.rdatatype.MX:
            continue
        name = rr.exchange.to_text(omit_final_dot=True).lower()
        try:
            name = validate.domain(name)
        except ValidationError:
            continue  # a null MX (".") or junk: never acted upon
        if best is None or rr.preference < best:
            best, hosts = rr.preference, [name]
        elif rr.preference == best:
            hosts.append(name)
    return tuple(sorted(hosts)), float(ans.rrset.ttl if ans.rrset else 0)


class SyncMx:
    """The same lookups, blocking, for the queue tools (inventory, release)."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver
        self._cache: dict[str, tuple[float, Hosts]] = {}

    def hosts(self, domain: str) -> Hosts:
        hit = self._cache.get(domain)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            out, ttl = primary_hosts(self.resolver.resolve(domain, "MX", search=False))
        except dns.resolver.NoAnswer:
            out, ttl = (domain,), 60.0
        except (dns.exception.DNSException, OSError):
            out, ttl = (), 15.0
        self._cache[domain] = (now + max(ttl, 15.0), out)
        return out
