"""PTR, forward-confirmed reverse DNS and HELO checks of our sending IPs and names.

Receivers reject mail from an IP without PTR (Sisimai reason ``requireptr``), from a PTR that does
not resolve back to the IP, or from a HELO name that does not resolve; many also distrust PTR
names that look dynamic ("dsl", "pool", the IP's digits).
"""

from __future__ import annotations

import ipaddress
import re

from mailwarden.reputation.dns import Dns
from mailwarden.reputation.findings import Finding

_GENERIC = re.compile(
    r"(?:^|[.-])(?:dyn(?:amic)?|dsl|adsl|xdsl|cable|dial(?:up)?|pool|ppp|dhcp|cpe|client|"
    r"broadband|customer|static-ip|user|host-?\d)(?:[.-]|\d|$)",
    re.I,
)


def looks_generic(name: str, ip: str) -> bool:
    """A PTR name that embeds the IP's digits or a dynamic/residential keyword."""
    n = name.lower()
    if _GENERIC.search(n):
        return True
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(a, ipaddress.IPv4Address):
        octets = str(a).split(".")
        for sep in ("-", ".", "_", ""):
            if sep.join(octets) in n or sep.join(reversed(octets)) in n:
                return True
    return False


def check_ip(dns: Dns, ip: str) -> tuple[list[Finding], list[str]]:
    """PTR and FCrDNS of one of our IPs. Returns the findings and the confirmed PTR names."""
    out: list[Finding] = []
    ptr = dns.ptr(ip)
    if ptr.status == "error":
        return [
            Finding(
                "ptr",
                "error",
                "could not look up the PTR record",
                ip,
                evidence=ptr.error,
                fix="Check the resolver in [dns] nameservers.",
            )
        ], []
    if not ptr.ok or not ptr.values:
        return [
            Finding(
                "ptr",
                "problem",
                "no reverse DNS (PTR) for this sending IP",
                ip,
                evidence=f"{ptr.name} PTR: {ptr.status}",
                fix="Ask the owner of the IP range (your hosting provider) to set a PTR naming "
                "your mail host, e.g. the value of smtp_helo_name.",
            )
        ], []
    confirmed: list[str] = []
    for name in ptr.values:
        a4, a6 = dns.addresses(name)
        if a4.status == "error" and a6.status == "error":
            out.append(
                Finding(
                    "fcrdns",
                    "error",
                    f"could not resolve PTR name {name}",
                    ip,
                    evidence=f"{a4.error}; {a6.error}",
                )
            )
            continue
        addrs = set(a4.values) | set(a6.values)
        norm = {str(ipaddress.ip_address(x)) for x in addrs}
        if str(ipaddress.ip_address(ip)) in norm:
            confirmed.append(name)
            out.append(
                Finding(
                    "fcrdns",
                    "ok",
                    f"PTR {name} resolves back to {ip}",
                    ip,
                    evidence=f"{ip} PTR {name}; {name} -> {', '.join(sorted(norm))}",
                )
            )
        else:
            out.append(
                Finding(
                    "fcrdns",
                    "problem",
                    f"PTR name {name} does not resolve back to {ip} (no forward-confirmed rDNS)",
                    ip,
                    evidence=f"{ip} PTR {name}; {name} -> {', '.join(sorted(norm)) or 'nothing'}",
                    fix=f"Add an A/AAAA record {name} -> {ip}, or change the PTR to a name that "
                    "resolves to this IP.",
                )
            )
        if looks_generic(name, ip):
            out.append(
                Finding(
                    "ptr",
                    "warning",
                    f"PTR {name} looks generic or dynamic",
                    ip,
                    evidence=name,
                    fix="Use a PTR naming your mail host (mail.example.com), not the provider's "
                    "default; receivers score generic names as residential.",
                )
            )
    return out, confirmed


def check_helo(dns: Dns, helo: str, ips: list[str], ptr_names: list[str]) -> list[Finding]:
    """Does our HELO name resolve to one of our IPs, and does it match the PTR?"""
    out: list[Finding] = []
    a4, a6 = dns.addresses(helo)
    if a4.status == "error" and a6.status == "error":
        return [
            Finding(
                "helo",
                "error",
                f"could not resolve HELO name {helo}",
                helo,
                evidence=f"{a4.error}; {a6.error}",
            )
        ]
    addrs = {str(ipaddress.ip_address(x)) for x in (*a4.values, *a6.values)}
    if not addrs:
        out.append(
            Finding(
                "helo",
                "problem",
                f"HELO name {helo} does not resolve",
                helo,
                evidence=f"A: {a4.status}, AAAA: {a6.status}",
                fix=f"Publish an A record {helo} -> your sending IP, or set smtp_helo_name to a "
                "name that resolves (receivers using reject_unknown_helo_hostname refuse it).",
            )
        )
    elif ips and not addrs & {str(ipaddress.ip_address(i)) for i in ips}:
        out.append(
            Finding(
                "helo",
                "warning",
                f"HELO name {helo} resolves to {', '.join(sorted(addrs))}, not to our IPs",
                helo,
                evidence=f"our IPs: {', '.join(ips)}",
                fix="Point the HELO name at the sending IP or change smtp_helo_name.",
            )
        )
    else:
        out.append(
            Finding(
                "helo",
                "ok",
                f"HELO name {helo} resolves to our IP",
                helo,
                evidence=", ".join(sorted(addrs)),
            )
        )
    if ptr_names and helo.lower().rstrip(".") not in {n.lower() for n in ptr_names}:
        out.append(
            Finding(
                "helo",
                "warning",
                f"HELO name {helo} differs from the PTR name ({', '.join(ptr_names)})",
                helo,
                fix="Set smtp_helo_name to the PTR name of the sending IP (or the PTR to the HELO)."
                "",
            )
        )
    return out
