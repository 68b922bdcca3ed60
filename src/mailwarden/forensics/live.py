"""``trace --live``: DNS checks per hop (PTR, forward-confirmed rDNS, HELO resolves to the IP).

dnspython's asyncio resolver, one query per distinct name or address, all concurrently (at
most :data:`CONCURRENCY` in flight), each bounded by the ``[dns]`` timeout. A DNS *error*
(timeout, SERVFAIL, refused, no server reachable) is reported as an error finding and never
read as an answer; NXDOMAIN and an empty answer are answers ("no PTR", "does not resolve").
Loopback and link-local addresses are not looked up.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from mailwarden.config import DnsSettings
from mailwarden.dnsutil import async_resolver
from mailwarden.forensics.received import host_name, parse_ip
from mailwarden.forensics.trace import HopReport, ip_kind, org_domain

CONCURRENCY = 32


@dataclass(slots=True)
class Answer:
    """One lookup: ``values`` when it answered (maybe empty), ``error`` when it did not."""

    values: list[str] = field(default_factory=list)
    error: str = ""
    nxdomain: bool = False


async def _query(res: Any, sem: asyncio.Semaphore, name: str, rtype: str) -> Answer:
    import dns.exception
    import dns.resolver

    async with sem:
        try:
            if rtype == "PTR":
                ans = await res.resolve_address(name)
            else:
                ans = await res.resolve(name, rtype, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(nxdomain=True)
        except dns.resolver.NoAnswer:
            return Answer()
        except dns.resolver.LifetimeTimeout:
            return Answer(error=f"{rtype} {name}: timed out after {res.lifetime:g} s")
        except dns.resolver.NoNameservers as exc:
            return Answer(error=f"{rtype} {name}: no server answered ({_short(exc)})")
        except dns.exception.DNSException as exc:
            return Answer(error=f"{rtype} {name}: {_short(exc)}")
        except OSError as exc:
            return Answer(error=f"{rtype} {name}: {exc.strerror or exc}")
    if rtype == "PTR":
        vals = [str(r.target).rstrip(".") for r in ans]
    else:
        vals = [str(r.address) for r in ans]
    return Answer(sorted(set(vals)))


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


async def _addresses(res: Any, sem: asyncio.Semaphore, name: str) -> Answer:
    a, aaaa = await asyncio.gather(_query(res, sem, name, "A"), _query(res, sem, name, "AAAA"))
    if a.error and aaaa.error:
        return Answer(error=a.error)
    return Answer(
        sorted(set(a.values + aaaa.values)),
        error=a.error or aaaa.error,
        nxdomain=a.nxdomain and aaaa.nxdomain,
    )


async def _run(reports: list[HopReport], settings: DnsSettings) -> None:
    res = async_resolver(settings)
    sem = asyncio.Semaphore(CONCURRENCY)
    ips = sorted(
        {
            r.hop.ip
            for r in reports
            if r.hop.parsed and ip_kind(r.hop.ip) not in ("loopback", "link-local")
        }
    )
    ptr_tasks = {ip: asyncio.ensure_future(_query(res, sem, ip, "PTR")) for ip in ips}
    helos = sorted(
        {
            host_name(r.hop.helo).lower()
            for r in reports
            if r.hop.parsed and host_name(r.hop.helo) and r.hop.helo.lower() != "localhost"
        }
    )
    fwd: dict[str, asyncio.Future[Answer]] = {
        n: asyncio.ensure_future(_addresses(res, sem, n)) for n in helos
    }
    ptrs = {ip: await t for ip, t in ptr_tasks.items()}
    for ans in ptrs.values():
        for name in ans.values:
            key = name.lower()
            if key not in fwd:
                fwd[key] = asyncio.ensure_future(_addresses(res, sem, key))
    forward = {n: await t for n, t in fwd.items()}
    for r in reports:
        if r.hop.parsed:
            _apply(r, ptrs.get(r.hop.ip), forward)


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _apply(r: HopReport, ptr: Answer | None, forward: dict[str, Answer]) -> None:
    h = r.hop
    live: dict[str, Any] = {
        "ptr": [],
        "fcrdns": None,
        "helo_addresses": [],
        "helo_matches_ip": None,
        "errors": [],
    }
    r.live = live
    if ptr is None:
        live["skipped"] = f"{h.ip} is a {ip_kind(h.ip)} address: not looked up"
        return
    if ptr.error:
        live["errors"].append(ptr.error)
        r.add("dns-error", "error", f"PTR lookup for {h.ip} failed: {ptr.error}")
    else:
        live["ptr"] = ptr.values
        if not ptr.values:
            r.add("live-no-ptr", "warning", f"{h.ip} has no PTR record now")
        else:
            confirmed: list[str] = []
            for name in ptr.values:
                fa = forward.get(name.lower())
                if fa is None:
                    continue
                if fa.error:
                    live["errors"].append(fa.error)
                    r.add("dns-error", "error", f"forward lookup of PTR {name} failed: {fa.error}")
                elif any(_same_ip(v, h.ip) for v in fa.values):
                    confirmed.append(name)
            had_error = any(forward.get(n.lower(), Answer()).error for n in ptr.values)
            live["fcrdns"] = bool(confirmed) if (confirmed or not had_error) else None
            if confirmed:
                r.add("live-fcrdns", "info", f"PTR {confirmed[0]} forward-confirms to {h.ip}")
            elif not had_error:
                r.add(
                    "live-fcrdns-failed",
                    "warning",
                    f"PTR {', '.join(ptr.values)} does not resolve back to {h.ip} "
                    "(not forward-confirmed)",
                )
            if h.rdns and h.rdns.lower() not in {p.lower() for p in ptr.values}:
                r.add(
                    "live-ptr-changed",
                    "info",
                    f"PTR is now {', '.join(ptr.values)}; the header recorded {h.rdns}",
                )
    helo = host_name(h.helo).lower()
    if not helo or helo == "localhost" or parse_ip(h.helo)[0]:
        return
    fa = forward.get(helo)
    if fa is None:
        return
    if fa.error:
        live["errors"].append(fa.error)
        r.add("dns-error", "error", f"lookup of HELO {helo} failed: {fa.error}")
        return
    live["helo_addresses"] = fa.values
    live["helo_matches_ip"] = any(_same_ip(v, h.ip) for v in fa.values)
    if not fa.values:
        r.add("live-helo-unresolvable", "warning", f"HELO {helo} does not resolve (no A/AAAA)")
    elif not live["helo_matches_ip"]:
        shown = ", ".join(fa.values[:4]) + (" ..." if len(fa.values) > 4 else "")
        r.add(
            "live-helo-elsewhere",
            "warning",
            f"HELO {helo} resolves to {shown}, not to {h.ip}",
        )
        ptr_orgs = {org_domain(p) for p in live["ptr"]}
        if live["ptr"] and org_domain(helo) not in ptr_orgs:
            r.add(
                "helo-foreign-domain",
                "warning",
                f"HELO names {helo}, but {h.ip} belongs to {', '.join(sorted(ptr_orgs))}: "
                "the client used someone else's domain",
            )
    else:
        r.add("live-helo-ok", "info", f"HELO {helo} resolves to {h.ip}")


def run_live(reports: list[HopReport], settings: DnsSettings) -> None:
    """Add live DNS findings (and ``report.live``) to every parsed hop, in place."""
    asyncio.run(_run(reports, settings))
