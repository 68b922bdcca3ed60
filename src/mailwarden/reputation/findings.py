"""Findings: what a check found, how bad it is, the evidence, and the fix.

Severity order: ``ok`` < ``info`` < ``warning`` < ``error`` (the check itself failed, e.g. a DNS
timeout: we could not tell) < ``problem``. ``mailwarden doctor`` exits 0 when nothing is worse
than info, 1 for warnings or check errors, 2 for problems.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["ok", "info", "warning", "error", "problem"]
_RANK: dict[str, int] = {"ok": 0, "info": 1, "warning": 2, "error": 3, "problem": 4}


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # "ptr", "fcrdns", "helo", "dnsbl", "spf", "dmarc", "dkim", "postfix.relay", ...
    severity: Severity
    title: str  # one line, plain language
    subject: str = ""  # the IP, domain, parameter or host concerned
    evidence: str = ""  # what was seen (DNS answers, postconf values, SMTP transcript)
    fix: str = ""  # what to do about it ("" for ok)
    url: str = ""  # lookup / delisting / documentation link

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank(severity: str) -> int:
    return _RANK.get(severity, 0)


def worst(findings: list[Finding]) -> Severity:
    if not findings:
        return "ok"
    return max((f.severity for f in findings), key=rank)


def exit_code(findings: list[Finding]) -> int:
    """0 ok/info, 1 warnings or check errors, 2 problems."""
    w = rank(worst(findings))
    if w >= _RANK["problem"]:
        return 2
    if w >= _RANK["warning"]:
        return 1
    return 0
