"""Walk every pattern of the loaded tables with its real samples, and check a sample against the
whole classifier. Used by the test suite, ``bench/classify_coverage.py`` and ``mailwarden
explain --check``; kept in the package so local tables in /etc/mailwarden can be checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from mailwarden.classify.engine import Classifier
from mailwarden.classify.model import Pattern, Sample
from mailwarden.classify.text import split_reply
from mailwarden.events import Classification, Reply


@dataclass(frozen=True, slots=True)
class Owned:
    """A pattern (or issuer) and where it lives."""

    table: str  # "internal", "reasons", "issuers" or a provider name
    id: str  # "<table>/<id>"
    reason: str
    scope: str | None
    issuer: str
    samples: tuple[Sample, ...]
    provider: str = ""  # provider name for provider patterns
    anywhere: bool = False  # the pattern must also decide when the provider is unknown


def owned_patterns(c: Classifier) -> Iterator[Owned]:
    """Every pattern of every table, in the order the classifier tries them."""

    def of(table: str, p: Pattern, provider: str = "") -> Owned:
        return Owned(
            table,
            f"{table}/{p.id}",
            p.reason,
            p.scope,
            p.issuer,
            tuple(p.samples),
            provider,
            p.anywhere,
        )

    for p in c.reasons.internal:
        yield of("internal", p)
    for name in sorted(c.providers):
        for p in c.providers[name].pattern:
            yield of(name, p, name)
    for p in c.reasons.rule:
        yield of("reasons", p)
    for r in c.reasons.remap:
        yield Owned("remap", f"remap/{r.id}", r.to, None, "", tuple(r.samples))
    for i in c.issuers.values():
        yield Owned("issuers", f"issuers/{i.id}", i.reason, None, i.id, tuple(i.samples))


def run_sample(
    c: Classifier, owner: Owned, s: Sample, *, unknown_provider: bool = False
) -> Classification:
    """Classify a sample the way the pipeline would see it (``unknown_provider``: as if the
    relay were not a known provider, for ``anywhere`` patterns)."""
    code, enh, text = split_reply(s.reply)
    reply = Reply(
        code=code,
        enhanced=enh,
        text=text,
        command=s.command,
        host=s.host,
        remote=s.remote,
        raw=s.reply,
    )
    if unknown_provider:
        return c.classify(replace(reply, host=""), dsn=s.dsn, status=s.outcome)
    provider = "" if s.host else owner.provider
    return c.classify(reply, dsn=s.dsn, status=s.outcome, provider=provider)


def expected(c: Classifier, owner: Owned, s: Sample) -> dict[str, object]:
    """What the sample must produce (fields the sample sets, else the owner's own values)."""
    reason = s.reason or owner.reason
    exp: dict[str, object] = {
        "rule": s.rule or (None if owner.table == "remap" else owner.id),  # remap: see check()
        "reason": reason,
        "scope": s.scope or owner.scope or c.reasons.scope.get(reason, ""),
        "issuer": s.issuer if s.issuer is not None else owner.issuer,
        "internal": s.internal if s.internal is not None else owner.table == "internal",
    }
    if s.url is not None:
        exp["url"] = s.url
    if s.cited_ip is not None:
        exp["cited_ip"] = s.cited_ip
    return exp


def check(
    c: Classifier, owner: Owned, s: Sample, *, unknown_provider: bool = False
) -> dict[str, tuple[object, object]]:
    """Differences ``{field: (expected, got)}``; empty when the sample passes."""
    got = run_sample(c, owner, s, unknown_provider=unknown_provider)
    diff = {
        k: (v, getattr(got, k))
        for k, v in expected(c, owner, s).items()
        if v is not None and getattr(got, k) != v
    }
    if owner.table == "remap" and s.rule is None and not got.rule.endswith("+" + owner.id):
        diff["rule"] = (f"...+{owner.id}", got.rule)
    return diff
