"""The dnspython resolvers of every stage, built from ``[dns]`` (:class:`config.DnsSettings`).

One place says what ``[dns]`` means: the listed nameservers, else those of
``/etc/resolv.conf`` (else ``127.0.0.1`` when it names none); ``port`` for every server;
``timeout`` both per server and for the whole query (lifetime); no dnspython cache (callers
that cache do it themselves, by TTL and with bounds). dnspython is imported when a resolver is
made, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from mailwarden.config import DnsSettings

if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.resolver

_R = TypeVar("_R", bound="dns.resolver.BaseResolver")


def _configure(cls: type[_R], settings: DnsSettings | None) -> _R:
    import dns.resolver

    s = settings or DnsSettings()
    if s.nameservers:
        r = cls(configure=False)
        r.nameservers = list(s.nameservers)
    else:
        try:
            r = cls()
        except dns.resolver.NoResolverConfiguration:
            r = cls(configure=False)
            r.nameservers = ["127.0.0.1"]
    r.port = s.port
    r.timeout = s.timeout
    r.lifetime = s.timeout
    r.cache = None
    return r


def resolver(settings: DnsSettings | None = None) -> dns.resolver.Resolver:
    """A blocking resolver from ``[dns]`` (the defaults when ``settings`` is None)."""
    import dns.resolver

    return _configure(dns.resolver.Resolver, settings)


def async_resolver(settings: DnsSettings | None = None) -> dns.asyncresolver.Resolver:
    """An asyncio resolver from ``[dns]`` (the defaults when ``settings`` is None)."""
    import dns.asyncresolver

    return _configure(dns.asyncresolver.Resolver, settings)
