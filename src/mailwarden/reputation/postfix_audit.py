"""Audit a Postfix configuration for what hurts deliverability or makes the host abusable.

Reads the effective parameters (``postconf -x``: defaults included, ``$names`` expanded) and
the master.cf services (``postconf -M`` and ``-P``) of the instance at ``config_dir``. Checks:
open-relay risk (mynetworks width, relay restrictions), TLS in both directions, queue lifetime
versus long provider blocks, mail-log retention (logrotate), a separate transport and IP for
bulk mail, and the egress rule. Every finding carries severity, evidence and the fix.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import glob
import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mailwarden.errors import ActuatorError
from mailwarden.reputation.findings import Finding, Severity

_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str, default_unit: str = "d") -> int | None:
    """Postfix time value ("5d", "3600s", "2w", "5") in seconds."""
    m = _DURATION.match(value.strip())
    if not m:
        return None
    return int(m.group(1)) * _UNIT[m.group(2) or default_unit]


def _split(value: str) -> list[str]:
    return [t for t in re.split(r"[\s,]+", value.strip()) if t]


@dataclass
class PostfixConfig:
    """Effective main.cf parameters and master.cf services of one instance."""

    params: dict[str, str]
    services: dict[str, dict[str, str]] = field(default_factory=dict)  # "name/type" -> fields
    config_dir: str = "/etc/postfix"

    def get(self, name: str, default: str = "") -> str:
        return self.params.get(name, default)


def _postconf(args: list[str], config_dir: str | None) -> str:
    exe = shutil.which("postconf")
    if not exe:
        raise ActuatorError("postconf not found: is Postfix installed?")
    cmd = [exe, *(["-c", config_dir] if config_dir else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise ActuatorError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r.stdout


def load_config(config_dir: str | None = None) -> PostfixConfig:
    """Read the instance's configuration with the real ``postconf``."""
    params: dict[str, str] = {}
    for line in _postconf(["-x"], config_dir).splitlines():
        k, sep, v = line.partition(" = ")
        if sep:
            params[k.strip()] = v.strip()
        elif line.endswith(" ="):
            params[line[:-2].strip()] = ""
    services: dict[str, dict[str, str]] = {}
    for line in _postconf(["-M"], config_dir).splitlines():
        f = line.split(None, 7)
        if len(f) >= 8:
            services[f"{f[0]}/{f[1]}"] = {"command": f[7]}
    for line in _postconf(["-P"], config_dir).splitlines():
        # name/type/parameter = value
        key, sep, v = line.partition(" = ")
        if not sep:
            continue
        parts = key.strip().split("/")
        if len(parts) == 3:
            services.setdefault(f"{parts[0]}/{parts[1]}", {})[parts[2]] = v.strip()
    return PostfixConfig(params, services, config_dir or params.get("config_directory", ""))


# ------------------------------------------------------------------------------- open relay


def _network_entries(
    value: str,
) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], list[str]]:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    other: list[str] = []
    for tok in _split(value):
        t = tok.strip("[]").replace("]/", "/")
        if t.startswith("!"):
            continue
        try:
            nets.append(ipaddress.ip_network(t, strict=False))
        except ValueError:
            other.append(tok)
    return nets, other


def check_relay(cfg: PostfixConfig) -> list[Finding]:
    out: list[Finding] = []
    mynet = cfg.get("mynetworks")
    nets, tables = _network_entries(mynet)
    wide = []
    for n in nets:
        public = not (n.is_private or n.is_loopback or n.is_link_local)
        if n.prefixlen == 0:
            out.append(
                Finding(
                    "postfix.relay",
                    "problem",
                    f"mynetworks contains {n}: every host "
                    "on the internet may relay through this server",
                    "mynetworks",
                    evidence=f"mynetworks = {mynet}",
                    fix="Set mynetworks = 127.0.0.0/8 [::1]/128 (plus the exact "
                    "addresses of your own applications), and use SASL for the rest.",
                )
            )
        elif public and (
            (n.version == 4 and n.prefixlen < 24) or (n.version == 6 and n.prefixlen < 48)
        ):
            wide.append(str(n))
    if wide:
        out.append(
            Finding(
                "postfix.relay",
                "warning",
                "mynetworks trusts wide public networks: "
                "every host in them may relay (one compromised neighbour sends spam "
                "through you)",
                "mynetworks",
                evidence=f"mynetworks = {mynet}",
                fix="List only the hosts that really submit mail without "
                "authentication; use SASL for the rest.",
            )
        )
    if not mynet.strip() and cfg.get("mynetworks_style") in ("class", "subnet"):
        out.append(
            Finding(
                "postfix.relay",
                "warning",
                f"mynetworks follows mynetworks_style = "
                f"{cfg.get('mynetworks_style')}: every host on the local "
                "subnet/class may relay",
                "mynetworks_style",
                fix="Set mynetworks_style = host or an explicit mynetworks.",
            )
        )
    if tables:
        out.append(
            Finding(
                "postfix.relay",
                "info",
                "mynetworks uses lookup tables; their contents were not audited",
                "mynetworks",
                evidence=" ".join(tables),
            )
        )

    def guarded(restrictions: str) -> tuple[bool, str]:
        """Does the list stop relaying before anything permits everybody?"""
        for tok in _split(restrictions):
            t = tok.lower()
            if t in ("reject_unauth_destination", "defer_unauth_destination"):
                return True, ""
            if t in ("permit", "permit_auth_destination"):
                return False, tok
        return False, ""

    relay = cfg.get("smtpd_relay_restrictions")
    rcpt = cfg.get("smtpd_recipient_restrictions")
    relay_ok, relay_permit = guarded(relay)
    rcpt_ok, rcpt_permit = guarded(rcpt)
    evidence = f"smtpd_relay_restrictions = {relay}\nsmtpd_recipient_restrictions = {rcpt}"
    if relay_permit or (not relay_ok and not rcpt_ok):
        out.append(
            Finding(
                "postfix.relay",
                "problem",
                "the SMTP server may relay for anybody: "
                "no reject_unauth_destination before an unconditional permit",
                "smtpd_relay_restrictions",
                evidence=evidence,
                fix="smtpd_relay_restrictions = permit_mynetworks "
                "permit_sasl_authenticated reject_unauth_destination",
            )
        )
    elif rcpt_permit and not relay_ok:
        out.append(
            Finding(
                "postfix.relay",
                "problem",
                "smtpd_recipient_restrictions permits before reject_unauth_destination",
                "smtpd_recipient_restrictions",
                evidence=evidence,
                fix="Put reject_unauth_destination first or set smtpd_relay_restrictions.",
            )
        )
    else:
        out.append(
            Finding(
                "postfix.relay",
                "ok",
                "relay restrictions stop unauthorised relaying",
                "smtpd_relay_restrictions",
                evidence=evidence,
            )
        )
    return out


# ---------------------------------------------------------------------------------------- TLS


def _cert_end(path: str) -> dt.datetime | None:
    exe = shutil.which("openssl")
    if not exe or not path or not Path(path).is_file():
        return None
    r = subprocess.run(
        [exe, "x509", "-enddate", "-noout", "-in", path], capture_output=True, text=True, timeout=10
    )
    m = re.search(r"notAfter=(.+)", r.stdout)
    if not m:
        return None
    try:
        return dt.datetime.strptime(m.group(1).strip(), "%b %d %H:%M:%S %Y %Z").replace(
            tzinfo=dt.UTC
        )
    except ValueError:
        return None


def check_tls(cfg: PostfixConfig, now: dt.datetime | None = None) -> list[Finding]:
    out: list[Finding] = []
    level = cfg.get("smtp_tls_security_level") or (
        "may" if cfg.get("smtp_use_tls") == "yes" else "none"
    )
    if level in ("", "none"):
        out.append(
            Finding(
                "postfix.tls",
                "warning",
                "outgoing mail is never encrypted (smtp_tls_security_level = none)",
                "smtp_tls_security_level",
                fix="smtp_tls_security_level = may (Gmail flags unencrypted mail).",
            )
        )
    else:
        out.append(
            Finding(
                "postfix.tls",
                "ok",
                f"outgoing TLS: smtp_tls_security_level = {level}",
                "smtp_tls_security_level",
            )
        )
    cert = cfg.get("smtpd_tls_cert_file") or cfg.get("smtpd_tls_chain_files")
    inbound = cfg.get("smtpd_tls_security_level") or (
        "may" if cfg.get("smtpd_use_tls") == "yes" else "none"
    )
    if inbound in ("", "none") or not cert:
        out.append(
            Finding(
                "postfix.tls",
                "warning",
                "the SMTP server offers no STARTTLS",
                "smtpd_tls_security_level",
                evidence=f"smtpd_tls_security_level = {inbound}; smtpd_tls_cert_file = {cert}",
                fix="Install a certificate and set smtpd_tls_security_level = may.",
            )
        )
    else:
        first = _split(cert)[0]
        end = _cert_end(first)
        now = now or dt.datetime.now(dt.UTC)
        if end is None:
            out.append(
                Finding(
                    "postfix.tls",
                    "info",
                    f"could not read the certificate {first}",
                    "smtpd_tls_cert_file",
                )
            )
        elif end < now:
            out.append(
                Finding(
                    "postfix.tls",
                    "problem",
                    f"the SMTP server certificate expired on {end:%Y-%m-%d}",
                    "smtpd_tls_cert_file",
                    evidence=first,
                    fix="Renew the certificate and reload Postfix.",
                )
            )
        elif end - now < dt.timedelta(days=14):
            out.append(
                Finding(
                    "postfix.tls",
                    "warning",
                    f"the SMTP server certificate expires on {end:%Y-%m-%d}",
                    "smtpd_tls_cert_file",
                    evidence=first,
                    fix="Renew it now.",
                )
            )
        else:
            out.append(
                Finding(
                    "postfix.tls",
                    "ok",
                    f"STARTTLS offered, certificate valid until {end:%Y-%m-%d}",
                    "smtpd_tls_cert_file",
                    evidence=first,
                )
            )
        if "snakeoil" in first:
            out.append(
                Finding(
                    "postfix.tls",
                    "info",
                    "the certificate is Debian's self-signed snakeoil certificate",
                    "smtpd_tls_cert_file",
                    evidence=first,
                    fix="Use a certificate for your host name (e.g. Let's Encrypt).",
                )
            )
    return out


# ------------------------------------------------------------------------------------- queues


def check_queue_lifetime(cfg: PostfixConfig, breaker_hold: bool = False) -> list[Finding]:
    life = parse_duration(cfg.get("maximal_queue_lifetime", "5d")) or 5 * 86400
    days = life / 86400
    if breaker_hold:
        return [
            Finding(
                "postfix.queue",
                "ok",
                f"maximal_queue_lifetime = "
                f"{cfg.get('maximal_queue_lifetime')}; the breaker moves parked mail to "
                "hold before it expires",
                "maximal_queue_lifetime",
            )
        ]
    sev: Severity = "warning" if days < 3 else "info"
    return [
        Finding(
            "postfix.queue",
            sev,
            f"mail parked during a provider block bounces after "
            f"{days:g} days (maximal_queue_lifetime = {cfg.get('maximal_queue_lifetime')})",
            "maximal_queue_lifetime",
            fix="Let mailwarden's breaker move parked mail to hold before it expires "
            "(`mailwarden postfix setup`), or raise maximal_queue_lifetime.",
        )
    ]


# ---------------------------------------------------------------------------- log retention


_LOGROTATE_PERIOD = {"daily": 1, "weekly": 7, "monthly": 30, "yearly": 365}


def logrotate_retention(log_path: str, confs: list[str] | None = None) -> tuple[int | None, str]:
    """Days of history logrotate keeps for ``log_path`` (None: no rule found) and the file."""
    files = (
        confs
        if confs is not None
        else ["/etc/logrotate.conf", *sorted(glob.glob("/etc/logrotate.d/*"))]
    )
    global_period, global_rotate = 7, 4
    for f in files:
        try:
            text = Path(f).read_text(errors="replace")
        except OSError:
            continue
        text = re.sub(r"#.*", "", text)
        # global defaults (outside braces) in logrotate.conf
        outside = re.sub(r"\{[^}]*\}", "", text)
        for w, d in _LOGROTATE_PERIOD.items():
            if re.search(rf"^\s*{w}\s*$", outside, re.M):
                global_period = d
        m = re.search(r"^\s*rotate\s+(\d+)", outside, re.M)
        if m:
            global_rotate = int(m.group(1))
        for block in re.finditer(r"([^{}]+)\{([^}]*)\}", text):
            paths = block.group(1).split()
            if not any(fnmatch.fnmatch(log_path, p) for p in paths):
                continue
            body = block.group(2)
            period = global_period
            for w, d in _LOGROTATE_PERIOD.items():
                if re.search(rf"^\s*{w}\s*$", body, re.M):
                    period = d
            m = re.search(r"^\s*rotate\s+(\d+)", body, re.M)
            rotate = int(m.group(1)) if m else global_rotate
            return period * (rotate + 1), f
    return None, ""


def check_log_retention(cfg: PostfixConfig, confs: list[str] | None = None) -> list[Finding]:
    log = cfg.get("maillog_file") or "/var/log/mail.log"
    days, where = logrotate_retention(log, confs)
    if days is None:
        return [
            Finding(
                "postfix.logs",
                "info",
                f"no logrotate rule found for {log}",
                log,
                fix="Rotate the mail log weekly and keep at least 8 weeks "
                "(logrotate: weekly + rotate 8); mailwarden's store keeps the history too.",
            )
        ]
    if days < 28:
        return [
            Finding(
                "postfix.logs",
                "warning",
                f"the mail log is kept only about {days} days",
                log,
                evidence=where,
                fix="Keep weeks to months of mail logs: a block "
                "is often noticed late (e.g. weekly + rotate 8).",
            )
        ]
    return [
        Finding(
            "postfix.logs", "ok", f"the mail log is kept about {days} days", log, evidence=where
        )
    ]


# ------------------------------------------------------------------------------------- bulk


def check_bulk_split(cfg: PostfixConfig) -> list[Finding]:
    maps = cfg.get("sender_dependent_default_transport_maps")
    bound = {
        k: v
        for k, v in cfg.services.items()
        if "smtp_bind_address" in v or "smtp_bind_address6" in v
    }
    if maps and bound:
        return [
            Finding(
                "postfix.bulk",
                "ok",
                "bulk mail has its own transport and source IP",
                "sender_dependent_default_transport_maps",
                evidence=f"sender_dependent_default_transport_maps = {maps}; "
                + ", ".join(
                    f"{k} binds {v.get('smtp_bind_address') or v.get('smtp_bind_address6')}"
                    for k, v in bound.items()
                ),
            )
        ]
    return [
        Finding(
            "postfix.bulk",
            "warning",
            "newsletters and transactional mail leave from the "
            "same transport and IP: a block caused by bulk mail also stops password resets "
            "and invoices",
            "sender_dependent_default_transport_maps",
            evidence=f"sender_dependent_default_transport_maps = {maps or '(unset)'}",
            fix="mailwarden postfix bulk-transport --sender 'newsletter@example.com' "
            "--bind <second IP>",
        )
    ]


# ------------------------------------------------------------------------------------ egress


def check_egress_rule(backend: str = "nft", table: str = "mailwarden") -> list[Finding]:
    """Is mailwarden's egress rule loaded (nft table or iptables chain)?"""
    from mailwarden.egress.firewall import rule_installed

    tool = "iptables" if backend == "iptables" else "nft"
    if not shutil.which(tool):
        return [
            Finding(
                "egress.rule",
                "info",
                f"{tool} is not installed: cannot tell whether "
                "only the MTA may connect to remote SMTP ports",
                tool,
                fix="Install nftables and run `mailwarden firewall apply`.",
            )
        ]
    if rule_installed(backend, table):
        return [
            Finding("egress.rule", "ok", f"the mailwarden egress rule is loaded ({backend})", tool)
        ]
    return [
        Finding(
            "egress.rule",
            "warning",
            "no egress rule: any program on this host can "
            "talk to remote MX servers directly (direct-MX spam from a hacked web app "
            "never appears in Postfix's log)",
            tool,
            fix="mailwarden firewall plan, then mailwarden firewall apply",
        )
    ]


def breaker_installed(cfg: PostfixConfig) -> bool:
    """Does Postfix consult mailwarden's transport lookup (``mailwarden postfix setup``)?"""
    return "socketmap:inet:" in cfg.get("transport_maps")


def audit(
    cfg: PostfixConfig,
    *,
    breaker_hold: bool | None = None,
    logrotate_confs: list[str] | None = None,
) -> list[Finding]:
    return [
        *check_relay(cfg),
        *check_tls(cfg),
        *check_queue_lifetime(
            cfg, breaker_installed(cfg) if breaker_hold is None else breaker_hold
        ),
        *check_log_retention(cfg, logrotate_confs),
        *check_bulk_split(cfg),
    ]
