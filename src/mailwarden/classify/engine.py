"""The classifier: compiled tables applied in a fixed order, with a cache on normalised replies.

Order of stages (the first that decides wins):

1. ``reasons.toml [[internal]]``: Postfix's (and mailwarden's) own deferrals, matched at the
   start of the text Postfix wrote (``Reply.raw``), never of a remote reply; the verdict is
   marked ``internal=True``.
2. A 2xx reply is ``delivered`` (code tables), whatever its text says.
3. ``providers/<provider>.toml [[pattern]]`` (then those of the providers it ``include``\\ s),
   when the provider is known.
4. Provider patterns marked ``anywhere`` (distinctive codes such as ``[TSS04]`` or ``S3150``),
   for any relay.
5. ``reasons.toml [[rule]]``: generic phrases, in file order (Sisimai's Reason order is the
   model: specific recipient reasons first, broad ones last).
6. ``issuers.toml``: a reply that names a blocklist but matched nothing above.
7. Codes: ``[status]`` (exact enhanced code), ``[command]`` (5xx at connect/HELO), ``[subject]``
   (class.subject, e.g. ``5.6``), ``[code]`` (basic code), then ``onhold`` when there is text
   (undecidable) or ``undefined`` when there is none.

Then ``[[remap]]`` adjusts a generic verdict by what the reply alone cannot say: the SMTP stage
(an unknown user refused after DATA, or at an unknown stage, is ``filtered`` as in Sisimai) and the
outcome (a connection timeout in a final report after retries is ``expired``).
Two caches: the raw reply (exact repeats cost a dict lookup) and the normalised reply (IPs, ids
and addresses replaced, see :mod:`mailwarden.classify.text`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mailwarden.classify.model import (
    Issuer,
    IssuersTable,
    Pattern,
    Provider,
    ReasonsTable,
    validate,
)
from mailwarden.classify.providers import SuffixIndex, normalise_host, org_domain
from mailwarden.classify.text import (
    MAX_TEXT,
    cited_ip,
    command_of,
    fold,
    hash_status,
    normalise,
    split_reply,
    urls,
)
from mailwarden.errors import TableError
from mailwarden.events import Classification, Reply, Scope
from mailwarden.tables import iter_dir, load_file, merge

#: Entries per LRU cache (raw replies, normalised replies, hosts, domains).
_CACHE_SIZE = 1 << 16

#: A refusal after a 2xx banner in the same text (the code that counts).
_LATER_REPLY = re.compile(r"(?<!\S)[45]\d\d(?=[ -])")

#: Reasons whose reply may quote an unknown blocklist zone (see ``Classifier._zone_issuer``).
_LISTED = frozenset({"blocked", "badreputation", "spamdetected"})
_ZONE = re.compile(
    r"\b(?:blocked using|listed (?:in|on|at|by)(?: the)?)\s+"
    r"((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})\b(?![.@-])"
)

#: Stages before any address is named: a mailbox status (X.1.x, X.2.x) there is nonsense.
_GREETING = frozenset({"CONNECT", "EHLO", "HELO"})

#: Rule-id prefixes of the generic tables and code fallbacks (the verdicts ``[[remap]]`` may
#: change); a provider's table name is never one of them.
_GENERIC_TABLES = frozenset(
    {"reasons", "issuers", "status", "subject", "code", "command", "fallback"}
)


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled pattern with its verdict and conditions."""

    id: str  # "<table>/<pattern id>"
    reason: str
    scope: Scope | None
    issuer: str
    url: str
    regex: re.Pattern[str]
    codes: tuple[str, ...]
    status: tuple[str, ...]
    commands: frozenset[str]
    not_commands: frozenset[str]
    inner: bool
    cite: bool
    pattern: Pattern

    @classmethod
    def of(cls, table: str, p: Pattern) -> Rule:
        return cls(
            id=f"{table}/{p.id}",
            reason=p.reason,
            scope=p.scope,
            issuer=p.issuer,
            url=p.url,
            regex=p.compiled(),
            codes=tuple(p.codes),
            status=tuple(p.status),
            commands=frozenset(p.commands),
            not_commands=frozenset(p.not_commands),
            inner=p.inner,
            cite=p.cite,
            pattern=p,
        )

    def applies(self, code: str, enh: str, command: str) -> bool:
        if self.codes and not code.startswith(self.codes):
            return False
        if self.status and not (enh and enh.startswith(self.status)):
            return False
        if self.commands and command not in self.commands:
            return False
        return not (self.not_commands and command in self.not_commands)


class Stage:
    """An ordered rule list behind one combined regex: a miss costs a single search."""

    def __init__(self, rules: Iterable[Rule], *, prefilter: bool = True) -> None:
        self.rules = tuple(rules)
        self.prefilter = prefilter  # False for stages that nearly always match (generic phrases)
        self._compiled: re.Pattern[str] | None = None  # on first use: most providers never are

    @property
    def _any(self) -> re.Pattern[str] | None:
        if self._compiled is None and self.rules:
            self._compiled = re.compile(
                "|".join(f"(?:{r.regex.pattern})" for r in self.rules), re.IGNORECASE
            )
        return self._compiled

    def maybe_at_start(self, text: str) -> bool:
        """Cheap pre-check for anchored stages: could a rule match at the start of ``text``?"""
        rx = self._any
        return rx is not None and rx.match(text) is not None

    def first(
        self, text: str, code: str, enh: str, command: str
    ) -> tuple[Rule, re.Match[str]] | None:
        rx = self._any
        if rx is None or (self.prefilter and not rx.search(text)):
            return None
        for r in self.rules:
            m = r.regex.search(text)
            if m and r.applies(code, enh, command):
                return r, m
        return None


@dataclass(frozen=True, slots=True)
class Decision:
    """The cached part of a classification (everything that does not depend on the raw text)."""

    reason: str
    scope: Scope
    issuer: str = ""
    rule: str = ""
    url: str = ""
    internal: bool = False
    cite: bool = True
    provider: str = ""  # a provider named in an internal text ("circuit open for provider x")


class Classifier:
    """Reply -> :class:`~mailwarden.events.Classification`; relay host/domain -> provider.

    Build with :meth:`load`. Instances are immutable after loading and safe to share between
    threads (the caches are ``functools.lru_cache``).
    """

    def __init__(
        self,
        reasons: ReasonsTable,
        issuers: IssuersTable,
        providers: Mapping[str, Provider],
    ) -> None:
        self.reasons = reasons
        self.issuers: dict[str, Issuer] = {i.id: i for i in issuers.issuer if i.enabled}
        self.providers: dict[str, Provider] = dict(providers)
        self.breaker_marker: str = reasons.meta.breaker_marker
        self._scope = reasons.scope
        self._internal = Stage(Rule.of("internal", p) for p in reasons.internal if p.enabled)
        self._generic = Stage(
            (Rule.of("reasons", p) for p in reasons.rule if p.enabled), prefilter=False
        )
        self._remaps = tuple(r for r in reasons.remap if r.enabled)
        self._remap_from = frozenset(r.from_ for r in self._remaps)
        self._issuer_re = [(i, i.compiled()) for i in self.issuers.values()]
        self._issuer_rx = {i.id: rx for i, rx in self._issuer_re}
        self._issuer_any = (
            re.compile("|".join(f"(?:{rx.pattern})" for _, rx in self._issuer_re), re.I)
            if self._issuer_re
            else None
        )
        self._mx = SuffixIndex()
        self._domains = SuffixIndex()
        self._provider_stage: dict[str, Stage] = {}
        for name, prov in sorted(self.providers.items()):
            self._mx.add(prov.mx_suffixes, name)
            self._domains.add(prov.domains, name)
        for name, prov in self.providers.items():
            rules: list[Rule] = []
            for src in [name, *prov.include]:
                other = self.providers.get(src)
                if other is None:
                    raise TableError(f"provider {name!r} includes unknown provider {src!r}")
                rules.extend(Rule.of(src, p) for p in other.pattern if p.enabled)
            self._provider_stage[name] = Stage(rules)
        # Distinctive provider codes ([TSS04], S3150, OFR004_104, BL000001 ...) also decide when
        # the relay is not (known as) that provider: forwarded bounces, IP-literal relays.
        self._anywhere = Stage(
            Rule.of(name, p)
            for name, prov in sorted(self.providers.items())
            for p in prov.pattern
            if p.enabled and p.anywhere
        )
        self._decide = lru_cache(maxsize=_CACHE_SIZE)(self._decide_uncached)
        self._internal_decide = lru_cache(maxsize=_CACHE_SIZE)(self._internal_uncached)
        self._classify_raw = lru_cache(maxsize=_CACHE_SIZE)(self._classify_raw_uncached)
        self.provider_for_host = lru_cache(maxsize=_CACHE_SIZE)(self._provider_for_host)  # type: ignore[method-assign]
        self.provider_for_domain = lru_cache(maxsize=_CACHE_SIZE)(self._provider_for_domain)  # type: ignore[method-assign]

    # -----------------------------------------------------------------------------------------
    # Loading
    # -----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, etc: Path | None = None) -> Classifier:
        """Load and validate the shipped tables merged with local ones in ``etc``
        (default: ``$MAILWARDEN_ETC`` or ``/etc/mailwarden``). Raises :class:`TableError`."""
        reasons = _load_single("reasons", ReasonsTable, etc)
        issuers = _load_single("issuers", IssuersTable, etc)
        providers: dict[str, Provider] = {}
        paths: dict[str, Path] = {}
        for tf in iter_dir("providers", etc=etc):
            prov = validate(Provider, tf.data, tf.path)
            if prov.name != tf.name:
                raise TableError(f"{tf.path}: name {prov.name!r} must match the file name")
            _unique((p.id for p in prov.pattern), tf.path)
            providers[prov.name] = prov
            paths[prov.name] = tf.path
        reasons = reasons.model_copy(
            update={
                "rule": _reorder(reasons.rule, "reasons.toml [[rule]]"),
                "internal": _reorder(reasons.internal, "reasons.toml [[internal]]"),
            }
        )
        _unique((p.id for p in reasons.rule), "reasons.toml [[rule]]")
        _unique((p.id for p in reasons.internal), "reasons.toml [[internal]]")
        _unique((i.id for i in issuers.issuer), "issuers.toml")
        known = {i.id for i in issuers.issuer}
        for name, prov in providers.items():
            where = paths[name]
            for p in prov.pattern:
                if p.issuer and p.issuer not in known:
                    raise TableError(f"{where}: pattern {p.id}: unknown issuer {p.issuer!r}")
                if not p.reason:
                    raise TableError(f"{where}: pattern {p.id}: reason is required")
            for other in prov.include:
                if other not in providers:
                    raise TableError(f"{where}: includes unknown provider {other!r}")
        for p in reasons.rule:
            if not p.reason:
                raise TableError(f"reasons.toml: rule {p.id}: reason is required")
        for p in reasons.internal:
            if not p.reason and not p.inner:
                raise TableError(f"reasons.toml: internal {p.id}: needs a reason or inner = true")
        return cls(reasons, issuers, providers)

    # -----------------------------------------------------------------------------------------
    # Providers
    # -----------------------------------------------------------------------------------------

    def _provider_for_host(self, host: str, ip: str = "") -> str:
        """Provider of a relay (MX) host: MX-suffix rules, else its organisational domain,
        else ``""`` (IP literals, junk). ``ip`` is accepted for callers that only have an
        address; addresses are not mapped to providers (yet) and give ``""``."""
        h = normalise_host(host)
        if not h:
            return ""
        return self._mx.lookup(h) or org_domain(h)

    def _provider_for_domain(self, domain: str) -> str:
        """Provider of a mail domain (recipient or sender) by known hosted domains and MX
        suffixes, else the domain's organisational domain, else ``""``."""
        d = normalise_host(domain.rpartition("@")[2])
        if not d:
            return ""
        return self._domains.lookup(d) or self._mx.lookup(d) or org_domain(d)

    def is_known_provider(self, name: str) -> bool:
        """True when ``name`` is a provider of the tables (not a PSL fallback domain)."""
        return name in self.providers

    # -----------------------------------------------------------------------------------------
    # Replies
    # -----------------------------------------------------------------------------------------

    def classify(
        self,
        reply: Reply | None,
        *,
        dsn: str = "",
        status: str = "",
        text: str = "",
        provider: str = "",
    ) -> Classification:
        """Classify one non-success.

        ``reply`` is the parsed reply (``sources``); without one, ``text`` is parsed (``"550
        5.1.1 ..."``, a DSN Diagnostic-Code or Postfix's reason). ``dsn`` is the enhanced code
        logged or reported beside it (used when the reply has none); ``status`` the outcome
        (``deferred``, ``bounced``, ``expired``); ``provider`` overrides the provider found
        from ``reply.host``.
        """
        if reply is not None:
            code, enh, body = reply.code, reply.enhanced, reply.text or text or reply.raw
            command, remote, rip, host = reply.command, reply.remote, reply.ip, reply.host
            # What Postfix wrote around the reply ("delivery temporarily suspended: host X
            # said: ..."): the reply parser may have unwrapped it, the raw text still says it.
            local = reply.raw or text or ("" if reply.remote else reply.text)
        else:
            code, enh, body = None, "", text
            command, remote, rip, host, local = "", None, "", "", text
        prov = provider or (self.provider_for_host(host) if host else "")
        return self._classify_raw(
            prov,
            command,
            code,
            enh,
            body[:MAX_TEXT],
            local[:MAX_TEXT],
            _valid_dsn(dsn),
            status,
            remote,
            rip,
        )

    def _classify_raw_uncached(
        self,
        prov: str,
        command: str,
        code: int | None,
        enh: str,
        body: str,
        local: str,
        dsn: str,
        status: str,
        remote: bool | None,
        rip: str,
    ) -> Classification:
        """The whole classification of one raw reply: the same reply seen again (same IPs and
        ids, as in a log of one sender) costs one dictionary lookup. Otherwise the text is
        normalised, and replies that differ only in IPs and ids share the decision cache."""
        if code is None and not enh:
            code, enh, body = split_reply(body)
        if code is not None and 200 <= code < 300 and (later := _LATER_REPLY.search(body)):
            # a greeting banner ("220-mx ... 421 4.2.1 Service refuse") before the refusal
            code, later_enh, body = split_reply(body[later.start() :])
            enh = later_enh or enh
        enh = enh or dsn or hash_status(body)
        command = (
            command
            or command_of(body)
            or ("CONNECT" if "refused to talk to me" in local[:300] else "")
        )
        d = self._decide_texts(prov, command, code, enh, body, local, status)
        cited = "" if d.internal or not d.cite or remote is False else cited_ip(body, exclude=rip)
        return Classification(
            reason=d.reason,
            scope=d.scope,
            provider=prov or d.provider,
            issuer=d.issuer,
            url="" if d.internal else self._url(d, body, cited),
            cited_ip=cited,
            rule=d.rule,
            internal=d.internal,
        )

    def _decide_texts(
        self,
        prov: str,
        command: str,
        code: int | None,
        enh: str,
        body: str,
        local: str,
        status: str,
    ) -> Decision:
        """Decision for the raw texts: Postfix's own deferral at the start of ``local``
        (internal rules), else the tables on the normalised reply (the second-level cache),
        then a remap. Not cached itself: it runs under :meth:`_classify_raw_uncached`."""
        if local:
            folded = fold(local)
            if self._internal.maybe_at_start(folded):
                hit = self._internal_decide(normalise(folded), prov, status)
                if hit is not None:
                    return hit
        norm = normalise(fold(body, code, enh))
        d = self._decide(prov, command, "" if code is None else str(code), enh, norm, status)
        if d.reason in self._remap_from:
            d = self._remapped(d, command, enh, status)
        return d

    def _remapped(self, d: Decision, command: str, enh: str, status: str) -> Decision:
        """Apply the first ``[[remap]]`` whose conditions hold (see :class:`Remap`)."""
        if d.rule.split("/", 1)[0] not in _GENERIC_TABLES:
            return d  # a provider's own rule knows its replies
        for r in self._remaps:
            if r.from_ != d.reason:
                continue
            if r.commands and command not in r.commands:
                continue
            if r.outcomes and status not in r.outcomes:
                continue
            if r.status and not enh.startswith(tuple(r.status)):
                continue
            if r.keep_status and enh.startswith(tuple(r.keep_status)):
                continue
            return Decision(
                r.to, self._scope[r.to], d.issuer, f"{d.rule}+remap/{r.id}", d.url, cite=d.cite
            )
        return d

    def is_internal(self, text: str) -> bool:
        """True when ``text`` is one of Postfix's or mailwarden's own deferral reasons."""
        return self._internal_decide(normalise(fold(text)), "", "") is not None

    def _url(self, d: Decision, body: str, ip: str) -> str:
        found = urls(body) if ("http" in body or "www." in body) else []
        issuer = self.issuers.get(d.issuer)
        if found and issuer is not None:
            rx = self._issuer_rx[issuer.id]
            for u in found:
                if rx.search(u):
                    return u
        if found:
            return found[0]
        template = issuer.lookup_url if issuer is not None else ""
        if template and ("{ip}" not in template or ip):
            return template.replace("{ip}", ip)
        if d.url:
            return d.url
        return template.split("?", 1)[0] if template else ""

    def _scope_of(self, rule: Rule | None, reason: str) -> Scope:
        if rule is not None and rule.scope:
            return rule.scope
        return self._scope[reason]

    def _find_issuer(self, text: str) -> Issuer | None:
        if self._issuer_any is None or not self._issuer_any.search(text):
            return None
        for issuer, rx in self._issuer_re:
            if rx.search(text):
                return issuer
        return None

    def _internal_uncached(self, text: str, prov: str, status: str) -> Decision | None:
        hit = self._internal.first(text, "", "", "")
        if hit is None:
            return None
        rule, m = hit
        if not rule.inner:
            own = self._scope_of(rule, rule.reason)
            named = normalise_host((m.groupdict().get("provider") or "").rstrip("."))
            return Decision(rule.reason, own, rule.issuer, rule.id, rule.url, True, provider=named)
        rest = text[m.end() :]
        command = "CONNECT" if "refused to talk to me" in rest[:200] else ""
        icode, ienh, itext = split_reply(rest)
        icode_s = "" if icode is None else str(icode)
        inner = self._decide(prov, command, icode_s, ienh, fold(itext, icode, ienh), status)
        reason = rule.reason or inner.reason
        scope: Scope = (
            rule.scope if rule.scope else (inner.scope if not rule.reason else self._scope[reason])
        )
        return Decision(reason, scope, inner.issuer, rule.id, "", True)

    def _decide_uncached(
        self, prov: str, command: str, code: str, enh: str, text: str, status: str
    ) -> Decision:
        if code.startswith("2") or enh.startswith("2."):
            reason, rule_id = self._by_code(code, enh, command, text, status)  # a success
            return Decision(reason, self._scope[reason], "", rule_id)
        issuer = self._find_issuer(text)
        iid = issuer.id if issuer else ""
        stages = [self._provider_stage.get(prov), self._anywhere, self._generic]
        for stage in stages:
            if stage is None:
                continue
            hit = stage.first(text, code, enh, command)
            if hit is not None:
                rule = hit[0]
                if not (rule.issuer or iid) and rule.reason in _LISTED:
                    iid = self._zone_issuer(text)
                return Decision(
                    rule.reason,
                    self._scope_of(rule, rule.reason),
                    rule.issuer or iid,
                    rule.id,
                    rule.url,
                    cite=rule.cite,
                )
        if issuer is not None:
            return Decision(issuer.reason, self._scope[issuer.reason], iid, f"issuers/{iid}")
        reason, rule_id = self._by_code(code, enh, command, text, status)
        return Decision(reason, self._scope[reason], iid, rule_id)

    def _zone_issuer(self, text: str) -> str:
        """A blocklist no issuers.toml entry knows, named by the zone the reply quotes
        (``blocked using bl.example.net`` -> ``example.net``), else ``""``."""
        if "using" not in text and "listed" not in text:
            return ""
        m = _ZONE.search(text)
        return org_domain(m.group(1)) if m else ""

    def _by_code(
        self, code: str, enh: str, command: str, text: str, status: str
    ) -> tuple[str, str]:
        t = self.reasons
        if enh and enh in t.status and not (command in _GREETING and enh[1:4] in (".1.", ".2.")):
            return t.status[enh], f"status/{enh}"
        if code.startswith("5") and command in t.command:
            return t.command[command], f"command/{command}"
        if enh and enh[:3] in t.subject:
            return t.subject[enh[:3]], f"subject/{enh[:3]}"
        if code and code in t.code:
            return t.code[code], f"code/{code}"
        if status == "expired":
            return "expired", "status/expired"
        if text:
            return "onhold", "fallback/onhold"
        return "undefined", "fallback/undefined"


# ---------------------------------------------------------------------------------------------


def _valid_dsn(dsn: str) -> str:
    return dsn if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", dsn or "") else ""


def _reorder(rules: list[Pattern], where: str) -> list[Pattern]:
    """Move every rule with ``before = "<id>"`` right in front of that rule (local tables add
    rules at the end otherwise)."""
    out = [p for p in rules if not p.before]
    for p in rules:
        if not p.before:
            continue
        ids = [q.id for q in out]
        if p.before not in ids:
            raise TableError(f"{where}: rule {p.id}: before = {p.before!r} names no rule")
        out.insert(ids.index(p.before), p)
    return out


def _unique(ids: Iterable[str], where: object) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise TableError(f"{where}: duplicate id {i!r}")
        seen.add(i)


def _load_single(kind: str, model: type[Any], etc: Path | None) -> Any:
    files = load_file(kind, etc=etc)
    data = files[0].data
    for f in files[1:]:
        data = merge(data, f.data)
        validate(model, data, f.path)  # name the local file when it breaks the merge
    return validate(model, data, files[0].path)
