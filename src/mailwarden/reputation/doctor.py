"""``mailwarden doctor``: every reputation and configuration check for this host, in one list.

Identity (our IPs, names, HELO, domains, DKIM selectors) comes from ``[identity]`` completed by
``postconf`` and the interfaces; DNS goes through ``[dns]``. DNS checks of different subjects run
concurrently. A check that cannot run (no Postfix, DNS down) says so as a finding.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mailwarden.config import Settings
from mailwarden.errors import ActuatorError
from mailwarden.identity import Identity, detect_identity
from mailwarden.reputation import auth, dnsbl, host, postfix_audit
from mailwarden.reputation.dns import Dns
from mailwarden.reputation.findings import Finding


@dataclass
class DoctorOptions:
    dns: bool = True  # run the live DNS checks
    postfix: bool = True  # audit the Postfix configuration
    egress: bool = True  # look for the egress rule
    config_dir: str | None = None  # Postfix instance (default /etc/postfix)
    ips: list[str] = field(default_factory=list)  # override identity
    domains: list[str] = field(default_factory=list)
    helo_names: list[str] = field(default_factory=list)
    dkim: list[str] = field(
        default_factory=list
    )  # "selector:domain" or "selector._domainkey.domain"
    messages: list[bytes] = field(default_factory=list)  # messages whose DKIM to verify


def _selectors(items: list[str], domains: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for it in items:
        if "._domainkey." in it:
            sel, _, dom = it.partition("._domainkey.")
            out.append((sel, dom))
        elif ":" in it:
            sel, _, dom = it.partition(":")
            out.append((sel, dom))
        else:
            out.extend((it, d) for d in domains)
    return out


def dns_checks(dns: Dns, ident: Identity, opts: DoctorOptions) -> list[Finding]:
    ips = sorted(opts.ips or ident.ips)
    domains = sorted(opts.domains or ident.domains)
    helos = sorted(opts.helo_names or ident.helo_names)
    out: list[Finding] = []
    if not ips:
        out.append(
            Finding(
                "identity",
                "warning",
                "no sending IP known: set [identity] ips in mailwarden.toml (or pass --ip)",
                "identity",
            )
        )
    zones = dnsbl.load_zones()
    jobs: list[Callable[[], list[Finding]]] = []
    ptr_names: dict[str, list[str]] = {}

    def ptr_job(ip: str) -> Callable[[], list[Finding]]:
        def run() -> list[Finding]:
            f, names = host.check_ip(dns, ip)
            ptr_names[ip] = names
            return f

        return run

    with ThreadPoolExecutor(max_workers=8) as pool:
        ptr_results = list(pool.map(lambda j: j(), [ptr_job(ip) for ip in ips]))
        for f in ptr_results:
            out.extend(f)
        confirmed = sorted({n for names in ptr_names.values() for n in names})
        helo0 = helos[0] if helos else ""
        jobs = [
            lambda: dnsbl.findings(dnsbl.check(dns, ips, zones, "ip")),
            lambda: dnsbl.findings(dnsbl.check(dns, domains, zones, "domain")),
            lambda: auth.spf_findings(dns, ips, domains, helo0),
            lambda: auth.dmarc_findings(dns, domains),
        ]
        jobs += [_bind(host.check_helo, dns, h, ips, confirmed) for h in helos]
        jobs += [
            _bind(auth.selector_findings, dns, s, d) for s, d in _selectors(opts.dkim, domains)
        ]
        jobs += [_bind(auth.message_findings, dns, m) for m in opts.messages]
        for f in pool.map(lambda j: j(), jobs):
            out.extend(f)
    return out


def _bind(fn: Callable[..., list[Finding]], *args: object) -> Callable[[], list[Finding]]:
    return lambda: fn(*args)


def run_doctor(settings: Settings, opts: DoctorOptions | None = None) -> list[Finding]:
    opts = opts or DoctorOptions()
    if not opts.dkim and settings.identity.dkim_selectors:
        opts.dkim = list(settings.identity.dkim_selectors)
    ident = detect_identity(settings.identity, config_dir=opts.config_dir)
    out: list[Finding] = []
    if opts.dns:
        out.extend(dns_checks(Dns.from_settings(settings.dns), ident, opts))
    if opts.postfix:
        if shutil.which("postconf") is None:
            out.append(
                Finding(
                    "postfix",
                    "info",
                    "Postfix is not installed here: configuration audit skipped",
                    "postconf",
                )
            )
        else:
            try:
                cfg = postfix_audit.load_config(opts.config_dir)
            except ActuatorError as exc:
                out.append(
                    Finding(
                        "postfix",
                        "error",
                        "could not read the Postfix configuration",
                        opts.config_dir or "/etc/postfix",
                        evidence=str(exc),
                    )
                )
            else:
                hold = postfix_audit.breaker_installed(cfg) and settings.breaker.hold_margin > 0
                out.extend(postfix_audit.audit(cfg, breaker_hold=hold))
    if opts.egress:
        out.extend(
            postfix_audit.check_egress_rule(
                settings.egress.firewall_backend, settings.egress.firewall_table
            )
        )
    return out
