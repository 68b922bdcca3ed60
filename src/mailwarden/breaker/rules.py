"""Breaker rules: the data files ``data/breaker/*.toml`` (shipped) and ``<etc>/breaker/*.toml``.

A rule says: for replies from *provider* (``"*"``: any) that match a reply *pattern* and/or the
classifier's *reasons*/*scopes*/*issuers* (ids of the classifier's ``issuers.toml``; ``["*"]``:
every issuer it knows, shipped or local, minus ``not_issuers``), when the *trigger* is met
(``immediate`` or ``N/window``), take the *action* (``open``: park the provider; ``slow``:
route it through a throttled transport clone) for *duration* (``manual``: until a person closes
it), multiplied by *escalation* on every re-open from probing, up to *max_duration*. Every
rule carries the real reply it was written for (``[[rule.sample]]``); the test suite fails when
a sample does not fire its rule.

One file per provider; the file's ``provider`` is the default for its rules. A local file with the
same name replaces the shipped one (see :mod:`mailwarden.tables`). Provider names are the
classifier's (``classify.Classifier.provider_for_host``).

Matching order: rules of the reply's own provider first (file order), then the ``"*"`` rules; the
first rule that matches decides, so one reply is counted once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailwarden.errors import TableError
from mailwarden.events import REASONS, Classification, Reply
from mailwarden.tables import iter_dir

MANUAL = float("inf")  # duration of a rule that waits for a person
#: What a reason text (it ends up in a ``retry:`` answer and in the log) may contain.
REASON_TEXT = re.compile(r"^[A-Za-z0-9 .,:;()/_@+=#-]{1,200}$")

_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str | int | float) -> float:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``, ``"manual"`` (infinite) or a number of seconds."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"negative duration: {text}")
        return float(text)
    if text.strip().lower() == "manual":
        return MANUAL
    m = _DUR.match(text.lower())
    if not m:
        raise ValueError(f"bad duration {text!r} (use e.g. 90s, 30m, 2h, 1d or manual)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float | None) -> str:
    """Short human form of a duration: ``2h``, ``1h30m``, ``45s``, ``manual``."""
    if seconds is None or seconds == MANUAL:
        return "manual"
    s = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    if s or not parts:
        parts.append(f"{s}s")
    return "".join(parts)


def reply_line(reply: Reply) -> str:
    """The one-line form rules match against: ``"554 5.7.1 text"`` (absent parts left out)."""
    parts = [str(reply.code) if reply.code is not None else "", reply.enhanced, reply.text]
    return " ".join(p for p in parts if p)


class Sample(BaseModel):
    """A real reply a rule was written for, with what the classifier says about it."""

    model_config = ConfigDict(extra="forbid")

    reply: str  # "554 5.7.1 Swisscom AG IP: ..., You are not allowed to send us mail. ..."
    provider: str = ""  # defaults to the rule's provider ("example" for "*" rules)
    command: str = "RCPT TO"
    reason: str = ""  # the classification this reply is expected to get (for "*" rules)
    scope: str = ""
    issuer: str = ""
    source: str = ""  # where the reply was seen (URL / notes)
    fires: bool = True  # False: a look-alike that must NOT fire the rule


class SlowSpec(BaseModel):
    """What a ``slow`` rule sets on its transport clone."""

    model_config = ConfigDict(extra="forbid")

    rate_delay: int = Field(10, ge=1, le=3600)  # seconds, <name>_destination_rate_delay
    concurrency: int = Field(1, ge=1, le=20)  # <name>_destination_concurrency_limit

    @property
    def transport(self) -> str:
        """The master.cf service name of this clone, e.g. ``mwslow10s1``."""
        return f"mwslow{self.rate_delay}s{self.concurrency}"


class RuleModel(BaseModel):
    """One ``[[rule]]`` as written in a file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*$")
    provider: str = ""  # default: the file's provider
    providers: list[str] = Field(default_factory=list)  # several providers share the rule
    description: str = ""
    pattern: str = ""
    reasons: list[str] = Field(default_factory=list)
    scopes: list[Literal["ours", "recipient", "transient", ""]] = Field(default_factory=list)
    issuers: list[str] = Field(default_factory=list)  # ["*"]: any issuer of issuers.toml
    not_issuers: list[str] = Field(default_factory=list)  # ... except these
    codes: list[int] = Field(default_factory=list)  # basic reply codes, [] = any
    trigger: str = "immediate"
    action: Literal["open", "slow"] = "open"
    duration: str = "1h"
    escalation: float = Field(2.0, ge=1.0, le=10.0)
    max_duration: str = "1d"
    # Short explanation for the retry: answer, after "<marker> <provider>: " (default: the rule id)
    reason: str = ""
    issuer: str = ""  # fixed issuer when the pattern names one (e.g. a "[BL21]" Spamhaus reply)
    url: str = ""  # delisting / help URL when the reply has none
    # generate an smtp_delivery_status_filter entry (5xx -> 4xx); default: immediate open rules
    status_filter: bool | None = None
    match_internal: bool = False  # also count Postfix's own (non-remote) texts
    slow: SlowSpec = Field(default_factory=SlowSpec)
    sample: list[Sample] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, v: str) -> str:
        if v:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from exc
            if any(ord(c) < 32 or ord(c) == 127 for c in v):
                raise ValueError("pattern must be one line without control characters")
        return v

    @field_validator("reasons")
    @classmethod
    def _known_reasons(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if r not in REASONS]
        if bad:
            raise ValueError(f"unknown reasons {bad} (see events.REASONS)")
        return v

    @field_validator("duration", "max_duration")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, v: str) -> str:
        Trigger.parse(v)
        return v

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if v and not REASON_TEXT.fullmatch(v):
            raise ValueError(f"reason text must match {REASON_TEXT.pattern}")
        return v

    @model_validator(mode="after")
    def _needs_a_matcher(self) -> RuleModel:
        if not (self.pattern or self.reasons or self.issuers):
            raise ValueError("a rule needs a pattern, reasons or issuers")
        if not self.sample:
            raise ValueError("a rule needs at least one [[rule.sample]] with the real reply")
        return self


class FileModel(BaseModel):
    """One rule file."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=r"^(\*|[a-z0-9][a-z0-9_.-]*)$")
    description: str = ""
    rule: list[RuleModel] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Trigger:
    """``immediate`` (count 1, no window) or ``N/window`` (N matches within the window)."""

    count: int = 1
    window: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Trigger:
        t = text.strip().lower()
        if t == "immediate":
            return cls()
        n, sep, win = t.partition("/")
        if not sep or not n.isdigit() or int(n) < 1:
            raise ValueError(f"bad trigger {text!r} (use 'immediate' or e.g. '3/1h')")
        window = parse_duration(win)
        if window == MANUAL or window <= 0:
            raise ValueError(f"bad trigger window in {text!r}")
        return cls(int(n), window)

    @property
    def immediate(self) -> bool:
        return self.count <= 1

    def __str__(self) -> str:
        return "immediate" if self.immediate else f"{self.count}/{format_duration(self.window)}"


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule."""

    id: str
    provider: str  # "*" = any provider; the first of ``providers``
    action: Literal["open", "slow"]
    trigger: Trigger
    duration: float  # seconds; MANUAL = until a person closes it
    escalation: float
    max_duration: float
    reason: str  # short explanation, part of the retry: text
    pattern: re.Pattern[str] | None = None
    reasons: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    issuers: frozenset[str] = frozenset()
    not_issuers: frozenset[str] = frozenset()
    codes: frozenset[int] = frozenset()
    issuer: str = ""
    url: str = ""
    status_filter: bool = True
    match_internal: bool = False
    slow: SlowSpec | None = None
    description: str = ""
    samples: tuple[Sample, ...] = ()
    path: str = ""
    providers: tuple[str, ...] = ()

    @property
    def manual(self) -> bool:
        return self.duration == MANUAL

    def matches(self, line: str, reply: Reply, cls: Classification | None) -> bool:
        """Does this reply (one-line form ``line``) with its classification match the rule?"""
        if self.codes and reply.code not in self.codes:
            return False
        if self.pattern is not None and not self.pattern.search(line):
            return False
        if self.reasons or self.scopes or self.issuers:
            if cls is None:
                return False
            if self.reasons and cls.reason not in self.reasons:
                return False
            if self.scopes and cls.scope not in self.scopes:
                return False
            if self.issuers and not (
                cls.issuer and ("*" in self.issuers or cls.issuer in self.issuers)
            ):
                return False
            if cls.issuer in self.not_issuers:
                return False
        return True

    def duration_for(self, level: int) -> float:
        """Open duration at escalation ``level`` (1 = first trip), capped at ``max_duration``."""
        if self.manual:
            return MANUAL
        d = self.duration * (self.escalation ** max(0, level - 1))
        return min(d, self.max_duration) if self.max_duration != MANUAL else d


def _compile(model: RuleModel, provider: str, path: Path) -> Rule:
    provs = tuple(model.providers) or (model.provider or provider,)
    prov = provs[0]
    trigger = Trigger.parse(model.trigger)
    reason = model.reason or f"rule {model.id}"
    if not REASON_TEXT.fullmatch(reason):
        raise TableError(f"{path}: rule {model.id}: reason text must match {REASON_TEXT.pattern}")
    return Rule(
        id=model.id,
        provider=prov,
        action=model.action,
        trigger=trigger,
        duration=parse_duration(model.duration),
        escalation=model.escalation,
        max_duration=parse_duration(model.max_duration),
        reason=reason,
        pattern=re.compile(model.pattern, re.IGNORECASE) if model.pattern else None,
        reasons=frozenset(model.reasons),
        scopes=frozenset(model.scopes),
        issuers=frozenset(model.issuers),
        not_issuers=frozenset(model.not_issuers),
        codes=frozenset(model.codes),
        issuer=model.issuer,
        url=model.url,
        status_filter=(
            (model.status_filter if model.status_filter is not None else trigger.immediate)
            and model.action == "open"
            and bool(model.pattern)
        ),
        match_internal=model.match_internal,
        slow=model.slow if model.action == "slow" else None,
        description=model.description,
        samples=tuple(model.sample),
        path=str(path),
        providers=provs,
    )


def parse_file(data: dict[str, Any], path: Path) -> list[Rule]:
    """Validate one rule file and compile its enabled rules."""
    try:
        fm = FileModel.model_validate(data)
    except ValidationError as exc:
        raise TableError(f"{path}: {exc}") from exc
    return [_compile(r, fm.provider, path) for r in fm.rule if r.enabled]


@dataclass(frozen=True, slots=True)
class Match:
    """A rule that matched one reply."""

    rule: Rule
    line: str
    issuer: str
    url: str


@dataclass(slots=True)
class RuleSet:
    """All rules, indexed by provider, with the first-match-wins lookup."""

    rules: list[Rule] = field(default_factory=list)
    _by_provider: dict[str, list[Rule]] = field(default_factory=dict)
    _any: list[Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for r in self.rules:
            if r.id in seen:
                raise TableError(f"{r.path}: duplicate rule id {r.id!r} (also in {seen[r.id]})")
            seen[r.id] = r.path
            if "*" in r.providers:
                self._any.append(r)
            else:
                for p in r.providers:
                    self._by_provider.setdefault(p, []).append(r)

    @classmethod
    def load(cls, *, etc: Path | None = None) -> RuleSet:
        """Shipped rules plus local overrides (a local file replaces the shipped one by name)."""
        rules: list[Rule] = []
        for tf in iter_dir("breaker", etc=etc):
            rules.extend(parse_file(tf.data, tf.path))
        return cls(rules)

    @classmethod
    def from_rules(cls, rules: Iterable[Rule]) -> RuleSet:
        return cls(list(rules))

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def candidates(self, provider: str) -> Sequence[Rule]:
        return [*self._by_provider.get(provider, ()), *self._any]

    def match(self, provider: str, reply: Reply, cls: Classification | None) -> Match | None:
        """The first rule matching this reply from this provider, or None.

        Recipient-scoped replies and internal deferrals never match (they must neither trip
        nor reset a breaker); Postfix-generated texts only match rules with ``match_internal``.
        """
        if cls is not None and (cls.internal or cls.scope == "recipient"):
            return None
        line = reply_line(reply)
        for r in self.candidates(provider):
            if not reply.remote and not r.match_internal:
                continue
            if r.matches(line, reply, cls):
                issuer = r.issuer or (cls.issuer if cls else "")
                url = (cls.url if cls and cls.url else "") or r.url
                return Match(r, line, issuer, url)
        return None

    def status_filter_rules(self) -> list[Rule]:
        """Rules that get an ``smtp_delivery_status_filter`` entry (open rules with a pattern)."""
        return [r for r in self.rules if r.status_filter and r.pattern is not None]

    def slow_specs(self) -> list[SlowSpec]:
        """The distinct transport clones the ``slow`` rules need (setup creates them)."""
        out: dict[str, SlowSpec] = {}
        for r in self.rules:
            if r.slow is not None:
                out.setdefault(r.slow.transport, r.slow)
        return [out[k] for k in sorted(out)]
