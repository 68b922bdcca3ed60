"""Open-relay test: speak SMTP to a host the way an admin would by hand with telnet.

For each probe: ``MAIL FROM``, ``RCPT TO`` an address outside the host's domains, then ``RSET``.
A 2xx answer to RCPT means the host accepts mail for a foreign domain from us: it relays. No
DATA is ever sent, so no mail is delivered. The probes include the classic address tricks
(percent hack, bang path, source routes, quoted local parts) that fooled old relays.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
from dataclasses import dataclass, field

from mailwarden.reputation.findings import Finding

PROBE_DOMAIN = "relaytest.mailwarden.invalid"


@dataclass(frozen=True, slots=True)
class Probe:
    mail_from: str
    rcpt_to: str
    note: str


def default_probes(target: str) -> list[Probe]:
    """Classic relay probes; ``target`` is the host name or IP literal being tested."""
    ext = f"relaytest@{PROBE_DOMAIN}"
    local = f"postmaster@{target}"
    return [
        Probe(ext, ext, "foreign sender, foreign recipient"),
        Probe(local, ext, "local sender, foreign recipient"),
        Probe("", ext, "null sender, foreign recipient"),
        Probe(ext, f"relaytest%{PROBE_DOMAIN}@{target}", "percent hack"),
        Probe(ext, f'"relaytest@{PROBE_DOMAIN}"', "quoted local part"),
        Probe(ext, f"{PROBE_DOMAIN}!relaytest", "bang path"),
        Probe(ext, f"@{target}:relaytest@{PROBE_DOMAIN}", "source route"),
        Probe(ext, f"relaytest@{PROBE_DOMAIN}@{target}", "double at"),
    ]


@dataclass
class RelayResult:
    host: str
    port: int
    connected: bool = False
    banner: str = ""
    relays: list[Probe] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def open_relay(self) -> bool:
        return bool(self.relays)


def _line(code: int, msg: bytes | str) -> str:
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
    return f"<<< {code} {' '.join(text.split())}"


def relaytest(
    host: str,
    port: int = 25,
    *,
    helo: str = "relaytest.mailwarden.invalid",
    timeout: float = 15.0,
    probes: list[Probe] | None = None,
    source: str = "",
) -> RelayResult:
    """Run the probes against ``host:port``. ``source`` picks our source address: a relay
    usually trusts its own networks, so test from an address it should not trust."""
    res = RelayResult(host, port)
    target = f"[{host}]" if _is_ip(host) else host
    try:
        smtp = smtplib.SMTP(timeout=timeout, source_address=(source, 0) if source else None)
        code, banner = smtp.connect(host, port)
    except (OSError, smtplib.SMTPException) as exc:
        res.error = f"cannot connect to {host}:{port}: {exc}"
        return res
    res.connected = True
    res.banner = banner.decode("utf-8", "replace")
    res.transcript.append(_line(code, banner))
    try:
        res.transcript.append(f">>> EHLO {helo}")
        code, msg = smtp.ehlo(helo)
        res.transcript.append(_line(code, msg))
        if code >= 400:
            res.transcript.append(f">>> HELO {helo}")
            code, msg = smtp.helo(helo)
            res.transcript.append(_line(code, msg))
        for p in probes or default_probes(target):
            res.transcript.append(f">>> MAIL FROM:<{p.mail_from}>    ({p.note})")
            code, msg = smtp.docmd(f"MAIL FROM:<{p.mail_from}>")
            res.transcript.append(_line(code, msg))
            if 200 <= code < 300:
                res.transcript.append(f">>> RCPT TO:<{p.rcpt_to}>")
                code, msg = smtp.docmd(f"RCPT TO:<{p.rcpt_to}>")
                res.transcript.append(_line(code, msg))
                if 200 <= code < 300:
                    res.relays.append(p)
            res.transcript.append(">>> RSET")
            code, msg = smtp.docmd("RSET")
            res.transcript.append(_line(code, msg))
        res.transcript.append(">>> QUIT")
        smtp.quit()
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        res.error = f"conversation failed: {exc}"
        with contextlib.suppress(OSError):
            smtp.close()
    return res


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


def findings(res: RelayResult) -> list[Finding]:
    subject = f"{res.host}:{res.port}"
    evidence = "\n".join(res.transcript)
    if not res.connected:
        return [Finding("relay", "error", f"could not test {subject}", subject, evidence=res.error)]
    if res.open_relay:
        tricks = ", ".join(p.note for p in res.relays)
        return [
            Finding(
                "relay",
                "problem",
                f"{subject} is an OPEN RELAY: it accepted a foreign recipient from us ({tricks})",
                subject,
                evidence=evidence,
                fix="Restrict relaying: smtpd_relay_restrictions = permit_mynetworks "
                "permit_sasl_authenticated reject_unauth_destination, and a narrow "
                "mynetworks.",
            )
        ]
    if res.error:
        return [
            Finding(
                "relay",
                "error",
                f"relay test of {subject} was cut short",
                subject,
                evidence=f"{res.error}\n{evidence}",
            )
        ]
    return [
        Finding(
            "relay",
            "ok",
            f"{subject} refused to relay for a foreign domain",
            subject,
            evidence=evidence,
        )
    ]
