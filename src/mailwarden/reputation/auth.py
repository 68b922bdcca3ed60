"""SPF (pyspf), DKIM (dkimpy) and DMARC checks for our domains and IPs.

All DNS goes through one :class:`~mailwarden.reputation.dns.Dns` (the configured resolver): pyspf
and dkimpy are given lookup functions backed by it, so tests run against the DNS server on
loopback and production against the configured resolver. DMARC records are a handful of tag=value
pairs (RFC 7489 §6.3), parsed here rather than pulling a large dependency for it.
"""

from __future__ import annotations

import base64
import email
import email.utils
import threading
from dataclasses import dataclass, field
from typing import Any

import dkim
import dkim.crypto
import dkim.util
import spf
from publicsuffixlist import PublicSuffixList

from mailwarden.reputation.dns import Dns
from mailwarden.reputation.findings import Finding, Severity

_PSL: PublicSuffixList | None = None
_SPF_LOCK = threading.Lock()


def org_domain(domain: str) -> str:
    """Organisational domain (RFC 7489 §3.2) through the Public Suffix List, offline."""
    global _PSL
    if _PSL is None:
        _PSL = PublicSuffixList()
    d = domain.strip(".").lower()
    return _PSL.privatesuffix(d) or d


# ---------------------------------------------------------------------------------------- SPF


def _spf_lookup(dns: Dns) -> Any:
    def lookup(name: str, qtype: str, *_a: Any, **_k: Any) -> list[tuple[tuple[str, str], Any]]:
        a = dns.query(name, qtype)
        if a.status == "error":
            raise spf.TempError(f"DNS {a.error}")
        out: list[tuple[tuple[str, str], Any]] = []
        for v in a.values:
            if qtype in ("TXT", "SPF"):
                out.append(((name, qtype), [v.encode()]))
            elif qtype == "MX":
                pref, _, host = v.partition(" ")
                out.append(((name, qtype), (int(pref), host)))
            else:
                out.append(((name, qtype), v))
        return out

    return lookup


def spf_check(dns: Dns, ip: str, domain: str, helo: str = "") -> tuple[str, str]:
    """SPF result for mail from ``postmaster@domain`` sent by ``ip``: (result, explanation)."""
    with _SPF_LOCK:  # pyspf looks DNS up through a module global
        saved = spf.DNSLookup
        spf.DNSLookup = _spf_lookup(dns)
        try:
            result, explanation = spf.check2(i=ip, s=f"postmaster@{domain}", h=helo or domain)
        finally:
            spf.DNSLookup = saved
    return str(result), str(explanation)


def spf_findings(dns: Dns, ips: list[str], domains: list[str], helo: str = "") -> list[Finding]:
    out: list[Finding] = []
    for d in domains:
        rec = dns.query(d, "TXT")
        spf_recs = [v for v in rec.values if v.lower().startswith("v=spf1")]
        if rec.status == "error":
            out.append(Finding("spf", "error", f"could not read SPF of {d}", d, evidence=rec.error))
            continue
        if not spf_recs:
            out.append(
                Finding(
                    "spf",
                    "problem",
                    f"{d} publishes no SPF record",
                    d,
                    fix=f'Publish "v=spf1 ip4:<your IP> -all" (or include your relay) '
                    f"as a TXT record of {d}.",
                )
            )
            continue
        if len(spf_recs) > 1:
            out.append(
                Finding(
                    "spf",
                    "problem",
                    f"{d} publishes {len(spf_recs)} SPF records (permerror at every receiver)",
                    d,
                    evidence=" | ".join(spf_recs),
                    fix="Merge them into one TXT record.",
                )
            )
            continue
        for ip in ips:
            res, expl = spf_check(dns, ip, d, helo)
            sevmap: dict[str, Severity] = {
                "pass": "ok",
                "fail": "problem",
                "softfail": "warning",
                "neutral": "warning",
                "none": "warning",
                "permerror": "problem",
                "temperror": "error",
            }
            sev = sevmap.get(res, "warning")
            title = (
                f"SPF of {d} authorises {ip}"
                if res == "pass"
                else f"SPF of {d} gives '{res}' for our IP {ip}"
            )
            fix = "" if res == "pass" else f"Add ip4:{ip} (or ip6:) to the SPF record of {d}."
            out.append(
                Finding("spf", sev, title, d, evidence=f"{spf_recs[0]} -> {res}: {expl}", fix=fix)
            )
    return out


# -------------------------------------------------------------------------------------- DMARC


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    domain: str  # where it was found
    raw: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def policy(self) -> str:
        return self.tags.get("p", "").lower()


def parse_dmarc(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in raw.split(";"):
        k, sep, v = part.partition("=")
        if sep:
            tags[k.strip().lower()] = v.strip()
    return tags


def dmarc_lookup(dns: Dns, domain: str) -> tuple[DmarcRecord | None, str]:
    """The DMARC record governing ``domain`` (its own, else the organisational domain's)."""
    for d in dict.fromkeys([domain.strip(".").lower(), org_domain(domain)]):
        a = dns.query(f"_dmarc.{d}", "TXT")
        if a.status == "error":
            return None, a.error
        recs = [v for v in a.values if v.replace(" ", "").lower().startswith("v=dmarc1")]
        if len(recs) == 1:
            return DmarcRecord(d, recs[0], parse_dmarc(recs[0])), ""
        if len(recs) > 1:
            return None, f"_dmarc.{d} has {len(recs)} DMARC records (invalid)"
    return None, ""


def dmarc_findings(dns: Dns, domains: list[str]) -> list[Finding]:
    out: list[Finding] = []
    for d in domains:
        rec, err = dmarc_lookup(dns, d)
        if err:
            sev: Severity = "problem" if "records" in err else "error"
            out.append(
                Finding(
                    "dmarc", sev, f"could not establish the DMARC policy of {d}", d, evidence=err
                )
            )
        elif rec is None:
            out.append(
                Finding(
                    "dmarc",
                    "warning",
                    f"{d} has no DMARC policy",
                    d,
                    fix=f'Publish TXT _dmarc.{d} "v=DMARC1; p=none; rua=mailto:...", '
                    "then tighten to quarantine/reject once reports are clean; Gmail "
                    "and Yahoo require DMARC from bulk senders.",
                )
            )
        elif rec.policy not in ("none", "quarantine", "reject"):
            out.append(
                Finding(
                    "dmarc",
                    "problem",
                    f"DMARC record of {d} has no valid p= tag",
                    d,
                    evidence=rec.raw,
                    fix="Set p=none, quarantine or reject.",
                )
            )
        else:
            sev_p: Severity = "info" if rec.policy == "none" else "ok"
            where = "" if rec.domain == d else f" (inherited from {rec.domain})"
            out.append(
                Finding(
                    "dmarc",
                    sev_p,
                    f"DMARC policy of {d} is p={rec.policy}{where}",
                    d,
                    evidence=rec.raw,
                    fix=""
                    if sev_p == "ok"
                    else "p=none only monitors; move to "
                    "quarantine or reject when aggregate reports are clean.",
                )
            )
    return out


# --------------------------------------------------------------------------------------- DKIM


def _dkim_dnsfunc(dns: Dns) -> Any:
    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        n = name.decode() if isinstance(name, bytes) else name
        a = dns.query(n.rstrip("."), "TXT")
        if a.status == "error":
            raise (
                dkim.DnsTimeoutError(a.error)
                if "timeout" in a.error
                else dkim.KeyFormatError(a.error)
            )
        return a.values[0].encode() if a.values else None

    return dnsfunc


def selector_findings(dns: Dns, selector: str, domain: str) -> list[Finding]:
    """Check a DKIM selector's published key."""
    name = f"{selector}._domainkey.{domain}"
    a = dns.query(name, "TXT")
    if a.status == "error":
        return [Finding("dkim", "error", f"could not read DKIM key {name}", name, evidence=a.error)]
    if not a.values:
        return [
            Finding(
                "dkim",
                "problem",
                f"no DKIM key published at {name}",
                name,
                evidence=a.status,
                fix="Publish the selector's public key (opendkim-genkey prints the record).",
            )
        ]
    raw = a.values[0]
    try:
        tags = dkim.util.parse_tag_value(raw.encode())
    except Exception as exc:  # dkimpy raises its own InvalidTagValueList and friends
        return [
            Finding(
                "dkim",
                "problem",
                f"DKIM record at {name} does not parse",
                name,
                evidence=f"{raw[:200]}: {exc}",
            )
        ]
    p = tags.get(b"p", b"")
    if not p:
        return [
            Finding(
                "dkim",
                "problem",
                f"DKIM key at {name} is revoked (empty p=)",
                name,
                evidence=raw[:200],
                fix="Publish the key or sign with another selector.",
            )
        ]
    ktype = tags.get(b"k", b"rsa").decode(errors="replace").lower()
    bits = 0
    try:
        raw_key = base64.b64decode(p, validate=False)
        if ktype == "rsa":
            bits = int(dkim.crypto.parse_public_key(raw_key)["modulus"]).bit_length()
        elif ktype == "ed25519" and len(raw_key) != 32:
            raise ValueError(f"ed25519 key of {len(raw_key)} bytes, expected 32")
        elif ktype not in ("rsa", "ed25519"):
            raise ValueError(f"unknown key type k={ktype}")
    except Exception as exc:  # dkimpy's UnparsableKeyError, binascii.Error, ValueError
        return [
            Finding(
                "dkim",
                "problem",
                f"DKIM key at {name} is not a valid public key",
                name,
                evidence=f"{exc}",
            )
        ]
    out: list[Finding] = []
    if ktype == "rsa" and bits and bits < 1024:
        out.append(
            Finding(
                "dkim",
                "problem",
                f"DKIM key at {name} is only {bits} bits",
                name,
                fix="Receivers ignore RSA keys under 1024 bits: use 2048.",
            )
        )
    elif ktype == "rsa" and bits and bits < 2048:
        out.append(
            Finding(
                "dkim",
                "warning",
                f"DKIM key at {name} is {bits} bits",
                name,
                fix="Move to a 2048-bit key.",
            )
        )
    else:
        out.append(
            Finding(
                "dkim",
                "ok",
                f"DKIM key at {name} is valid ({ktype}" + (f", {bits} bits" if bits else "") + ")",
                name,
            )
        )
    if b"y" in tags.get(b"t", b"").split(b":"):
        out.append(Finding("dkim", "info", f"DKIM key at {name} is in testing mode (t=y)", name))
    return out


@dataclass(frozen=True, slots=True)
class DkimResult:
    domain: str
    selector: str
    valid: bool
    error: str = ""


def verify_message(dns: Dns, message: bytes) -> tuple[list[DkimResult], str]:
    """Verify every DKIM-Signature of a message. Returns the results and the From: domain."""
    msg = email.message_from_bytes(message)
    from_domain = email.utils.parseaddr(str(msg.get("From", "")))[1].rpartition("@")[2].lower()
    n = len(msg.get_all("DKIM-Signature") or [])
    out: list[DkimResult] = []
    d = dkim.DKIM(message)
    for idx in range(n):
        try:
            ok = bool(d.verify(idx=idx, dnsfunc=_dkim_dnsfunc(dns)))
            err = ""
        except dkim.DKIMException as exc:
            ok, err = False, str(exc)
        sig = d.signature_fields if getattr(d, "signature_fields", None) else {}
        dom = sig.get(b"d", b"").decode(errors="replace").lower()
        sel = sig.get(b"s", b"").decode(errors="replace")
        out.append(DkimResult(dom, sel, ok, err))
    return out, from_domain


def message_findings(dns: Dns, message: bytes) -> list[Finding]:
    results, from_domain = verify_message(dns, message)
    if not results:
        return [
            Finding(
                "dkim",
                "problem",
                "the message carries no DKIM signature",
                from_domain,
                fix="Sign outgoing mail (OpenDKIM or rspamd as a milter).",
            )
        ]
    out: list[Finding] = []
    aligned = False
    for r in results:
        if r.valid:
            is_aligned = bool(from_domain) and org_domain(r.domain) == org_domain(from_domain)
            aligned |= is_aligned
            out.append(
                Finding(
                    "dkim",
                    "ok",
                    f"valid DKIM signature d={r.domain} s={r.selector}"
                    + ("" if is_aligned else f" (not aligned with From: {from_domain})"),
                    r.domain,
                )
            )
        else:
            out.append(
                Finding(
                    "dkim",
                    "problem",
                    f"DKIM signature d={r.domain} s={r.selector} does not verify",
                    r.domain,
                    evidence=r.error
                    or "body or header changed after signing, or the published key does not match",
                    fix="Check that the published key matches the signing key and "
                    "that nothing rewrites the message after signing.",
                )
            )
    if not aligned and any(r.valid for r in results):
        out.append(
            Finding(
                "dkim",
                "warning",
                f"no valid DKIM signature aligned with the From: "
                f"domain {from_domain} (DMARC needs one, or aligned SPF)",
                from_domain,
            )
        )
    return out
