"""DNS blocklist checks of our IPs and domains, from the curated table ``data/dnsbl.toml``.

An answer inside a zone's ``errors`` ranges (Spamhaus 127.255.255.0/24, DBL 127.0.1.255) is a
query error, never a listing; NXDOMAIN is "not listed"; a DNS failure is an error. Queries run
concurrently.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailwarden.errors import TableError
from mailwarden.reputation.dns import Answer, Dns
from mailwarden.reputation.findings import Finding, Severity
from mailwarden.tables import load_merged


class Code(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str
    list: str
    severity: Severity
    meaning: str
    fix: str = ""

    @field_validator("answer")
    @classmethod
    def _ip(cls, v: str) -> str:
        return str(ipaddress.IPv4Address(v))


class Zone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    zone: str
    kind: Literal["ip", "domain"]
    issuer: str
    name: str
    lookup_url: str = ""
    note: str = ""
    reputation: bool = False
    errors: list[str] = Field(default_factory=list)
    error_meanings: dict[str, str] = Field(default_factory=dict)
    code: list[Code] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("errors")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(n)) for n in v]

    def is_error(self, answer: str) -> bool:
        try:
            a = ipaddress.ip_address(answer)
        except ValueError:
            return True
        return any(a in ipaddress.ip_network(n) for n in self.errors)

    def query_name(self, subject: str) -> str:
        if self.kind == "ip":
            ip = ipaddress.ip_address(subject)
            if isinstance(ip, ipaddress.IPv4Address):
                labels = ".".join(reversed(str(ip).split(".")))
            else:
                labels = ".".join(reversed(ip.exploded.replace(":", "")))
            return f"{labels}.{self.zone}"
        return f"{subject.strip('.').lower()}.{self.zone}"


def load_zones(etc: Path | None = None) -> list[Zone]:
    data = load_merged("dnsbl", etc=etc)
    try:
        zones = [Zone.model_validate(z) for z in data.get("zone", [])]
    except ValidationError as exc:
        raise TableError(f"dnsbl.toml: {exc}") from exc
    return [z for z in zones if z.enabled]


@dataclass(frozen=True, slots=True)
class Listing:
    zone: Zone
    subject: str
    status: Literal["listed", "clean", "error"]
    answers: tuple[str, ...] = ()
    codes: tuple[Code, ...] = ()
    error: str = ""

    @property
    def url(self) -> str:
        return self.zone.lookup_url.replace("{query}", self.subject)


def _interpret(zone: Zone, subject: str, a: Answer) -> Listing:
    if a.status in ("nxdomain", "nodata"):
        return Listing(zone, subject, "clean")
    if a.status == "error":
        return Listing(zone, subject, "error", error=f"DNS error querying {a.name}: {a.error}")
    errs = [v for v in a.values if zone.is_error(v)]
    hits = [v for v in a.values if not zone.is_error(v)]
    if errs and not hits:
        why = "; ".join(zone.error_meanings.get(v, f"error code {v}") for v in errs)
        return Listing(
            zone,
            subject,
            "error",
            tuple(errs),
            error=f"{zone.zone} answered {', '.join(errs)}: {why}",
        )
    by_answer = {c.answer: c for c in zone.code}
    codes = tuple(by_answer[v] for v in hits if v in by_answer)
    return Listing(zone, subject, "listed", tuple(hits), codes)


def check(
    dns: Dns, subjects: list[str], zones: list[Zone], kind: Literal["ip", "domain"]
) -> list[Listing]:
    """Query every zone of ``kind`` for every subject, concurrently."""
    pairs: list[tuple[Zone, str]] = []
    for s in subjects:
        for z in zones:
            if z.kind != kind:
                continue
            if kind == "ip":
                try:
                    ipaddress.ip_address(s)
                except ValueError:
                    continue
            pairs.append((z, s))
    answers = dns.many([(z.query_name(s), "A") for z, s in pairs])
    return [_interpret(z, s, a) for (z, s), a in zip(pairs, answers, strict=True)]


def findings(listings: list[Listing]) -> list[Finding]:
    out: list[Finding] = []
    for li in listings:
        z = li.zone
        if li.status == "clean":
            out.append(
                Finding(
                    "dnsbl",
                    "ok",
                    f"not listed on {z.name}",
                    li.subject,
                    evidence=f"{z.zone}: NXDOMAIN",
                )
            )
        elif li.status == "error":
            out.append(
                Finding(
                    "dnsbl",
                    "error",
                    f"could not check {z.name}",
                    li.subject,
                    evidence=li.error + (f" ({z.note})" if z.note else ""),
                    fix="Query through a local recursive resolver (not a public one); "
                    "set [dns] nameservers in mailwarden.toml.",
                )
            )
        elif li.codes:
            for c in li.codes:
                title = (
                    f"{z.name}: {c.list} ({c.meaning})"
                    if z.reputation
                    else f"listed on {z.name} {c.list}: {c.meaning}"
                )
                out.append(
                    Finding(
                        "dnsbl",
                        c.severity,
                        title,
                        li.subject,
                        evidence=f"{z.query_name(li.subject)} A {c.answer}",
                        fix=c.fix,
                        url=li.url,
                    )
                )
        else:
            out.append(
                Finding(
                    "dnsbl",
                    "warning" if z.reputation else "problem",
                    f"listed on {z.name} with an undocumented code {', '.join(li.answers)}",
                    li.subject,
                    evidence=f"{z.query_name(li.subject)} A {', '.join(li.answers)}",
                    fix="Look the address up at the blocklist's site.",
                    url=li.url,
                )
            )
    return out
