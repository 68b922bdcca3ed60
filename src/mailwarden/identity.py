"""Who "we" are: our sending IPs, host names, HELO names and mail domains.

Configured values (``[identity]`` in mailwarden.toml) win; what is left empty is detected from
Postfix (``postconf -x -h``: myhostname, mydomain, smtp_helo_name, smtp_bind_address[6],
inet_interfaces, myorigin) and from the addresses on this host's interfaces (``ip -j addr``).
Used by forensics (is this Received hop ours?), reputation (which IPs and names to check) and
the breaker (per sending IP state).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass, field

from mailwarden.config import IdentitySettings


@dataclass(frozen=True, slots=True)
class Identity:
    ips: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    helo_names: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    sources: dict[str, str] = field(default_factory=dict)  # what came from where, for reports

    def is_our_ip(self, ip: str) -> bool:
        try:
            return str(ipaddress.ip_address(ip.strip("[]"))) in self.ips
        except ValueError:
            return False

    def is_our_name(self, name: str) -> bool:
        n = name.strip().rstrip(".").lower()
        return bool(n) and (n in self.names or n in self.helo_names)


def _norm_ip(value: str) -> str | None:
    try:
        ip = ipaddress.ip_address(value.strip().strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


def _norm_name(value: str) -> str:
    return value.strip().rstrip(".").lower()


def postconf_values(
    names: list[str], *, config_dir: str | None = None, postconf: str = "postconf"
) -> dict[str, str]:
    """Expanded values of Postfix parameters (``postconf -x -h``, one run for all names);
    {} when Postfix is absent or the configuration cannot be read."""
    exe = shutil.which(postconf)
    if not exe or not names:
        return {}
    cmd = [exe, "-x", "-h", *(["-c", config_dir] if config_dir else []), *names]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    values = r.stdout.splitlines()
    if r.returncode != 0 or len(values) != len(names):
        return {}
    return {n: v.strip() for n, v in zip(names, values, strict=True)}


def transport_overrides(config_dir: str | None = None) -> tuple[set[str], set[str]]:
    """HELO names and source addresses set per transport in master.cf (``-o smtp_helo_name``,
    ``-o smtp_bind_address[6]``, e.g. a bulk transport), from ``postconf -P -x``."""
    exe = shutil.which("postconf")
    if not exe:
        return set(), set()
    cmd = [exe, "-P", "-x", *(["-c", config_dir] if config_dir else [])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set(), set()
    helos: set[str] = set()
    ips: set[str] = set()
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        param = key.rsplit("/", 1)[-1]
        value = value.strip()
        if not sep or not value or "$" in value:
            continue
        if param in ("smtp_helo_name", "lmtp_lhlo_name"):
            name = _norm_name(value)
            if name and " " not in name:
                helos.add(name)
        elif param in ("smtp_bind_address", "smtp_bind_address6"):
            ip = _norm_ip(value)
            if ip:
                ips.add(ip)
    return helos, ips


def interface_addresses() -> list[str]:
    """Global unicast addresses configured on this host's interfaces (not loopback/link-local)."""
    exe = shutil.which("ip")
    if not exe:
        return []
    try:
        r = subprocess.run([exe, "-j", "addr", "show"], capture_output=True, text=True, timeout=10)
        data = json.loads(r.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return []
    out: list[str] = []
    for link in data:
        for a in link.get("addr_info", []):
            ip = _norm_ip(str(a.get("local", "")))
            if not ip:
                continue
            obj = ipaddress.ip_address(ip)
            if obj.is_loopback or obj.is_link_local or obj.is_multicast or obj.is_unspecified:
                continue
            out.append(ip)
    return out


def detect_identity(
    settings: IdentitySettings | None = None,
    *,
    config_dir: str | None = None,
    use_postconf: bool = True,
    use_interfaces: bool = True,
) -> Identity:
    """Configured identity, completed from postconf and the interfaces where left empty."""
    s = settings or IdentitySettings()
    sources: dict[str, str] = {}
    ips = {ip for ip in (_norm_ip(x) for x in s.ips) if ip}
    names = {_norm_name(x) for x in s.names if x.strip()}
    helos = {_norm_name(x) for x in s.helo_names if x.strip()}
    domains = {_norm_name(x) for x in s.domains if x.strip()}
    for key, val in (("ips", ips), ("names", names), ("helo_names", helos), ("domains", domains)):
        if val:
            sources[key] = "config"

    pc: dict[str, str] = {}
    if use_postconf and not (ips and names and helos and domains):
        pc = postconf_values(
            [
                "myhostname",
                "mydomain",
                "myorigin",
                "smtp_helo_name",
                "smtp_bind_address",
                "smtp_bind_address6",
                "inet_interfaces",
            ],
            config_dir=config_dir,
        )
    if not names and pc.get("myhostname"):
        names = {_norm_name(pc["myhostname"])}
        sources["names"] = "postconf myhostname"
    if not helos and (pc.get("smtp_helo_name") or pc.get("myhostname")):
        helos = {_norm_name(pc.get("smtp_helo_name") or pc["myhostname"])}
        sources["helo_names"] = "postconf smtp_helo_name"
    if not domains:
        for k in ("mydomain", "myorigin"):
            if pc.get(k) and "." in pc[k]:
                domains.add(_norm_name(pc[k]))
        if domains:
            sources["domains"] = "postconf mydomain/myorigin"
    t_helos, t_ips = (
        transport_overrides(config_dir)
        if use_postconf and not (s.ips and s.helo_names)
        else (set(), set())
    )
    if not s.helo_names and t_helos - helos:
        # per-transport HELO names (a bulk transport's -o smtp_helo_name) are ours too
        helos |= t_helos
        sources["helo_names"] = (sources.get("helo_names", "") + " + master.cf").lstrip(" +")
    if not ips:
        found: set[str] = set(t_ips)  # per-transport source addresses
        main_bind = {
            ip
            for k in ("smtp_bind_address", "smtp_bind_address6")
            if (ip := _norm_ip(pc.get(k, "")))
        }
        found |= main_bind
        for part in pc.get("inet_interfaces", "").replace(",", " ").split():
            ip = _norm_ip(part)
            if ip and not ipaddress.ip_address(ip).is_loopback:
                found.add(ip)
        if found:
            sources["ips"] = "postconf"
        if not main_bind and use_interfaces:
            # the default transport leaves from whatever address routing picks
            iface = set(interface_addresses())
            if iface - found:
                found |= iface
                sources["ips"] = (sources.get("ips", "") + " + interfaces").lstrip(" +")
        ips = found
    return Identity(
        ips=frozenset(ips),
        names=frozenset(names),
        helo_names=frozenset(helos),
        domains=frozenset(domains),
        sources=sources,
    )
