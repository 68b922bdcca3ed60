"""Typed, validated form of the classification tables (``reasons.toml``, ``issuers.toml``,
``providers/*.toml``).

The TOML files are parsed by :mod:`mailwarden.tables`; this module checks them with pydantic and
compiles every regular expression once, turning any problem into a
:class:`~mailwarden.errors.TableError` that names the file. Nothing here matches replies: see
:mod:`mailwarden.classify.engine`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailwarden.errors import TableError
from mailwarden.events import REASONS, Scope

#: SMTP stages as :class:`mailwarden.events.Reply` names them, for ``commands`` conditions.
COMMANDS = frozenset(
    {
        "CONNECT",
        "EHLO",
        "HELO",
        "STARTTLS",
        "AUTH",
        "MAIL FROM",
        "RCPT TO",
        "DATA",
        "end of DATA",
        "QUIT",
        "RSET",
        "BDAT",
        "XCLIENT",
        "XFORWARD",
        "LHLO",
    }
)

#: Delivery outcomes the classifier is told (``status=``), for ``outcomes`` conditions:
#: Postfix's ``status=`` values, and ``expired`` for a final report after retries.
OUTCOMES = frozenset({"deferred", "bounced", "expired", "undeliverable", "sent"})

_ID = r"^[a-z0-9][a-z0-9._-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_reason(value: str) -> str:
    if value not in REASONS:
        raise ValueError(f"unknown reason {value!r} (see events.REASONS)")
    return value


#: Compiled alternations by their patterns: a table's patterns are compiled once, when they
#: are validated, not again for the classifier (start-up time is most of a short run).
_COMPILED: dict[tuple[str, ...], re.Pattern[str]] = {}


def _compile(patterns: list[str]) -> re.Pattern[str]:
    """One case-insensitive alternation of ``patterns``; a bad one is named on its own."""
    key = tuple(patterns)
    rx = _COMPILED.get(key)
    if rx is not None:
        return rx
    try:
        rx = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    except re.error:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regex {p!r}: {exc}") from exc
        raise
    if len(_COMPILED) > 8192:
        _COMPILED.clear()
    _COMPILED[key] = rx
    return rx


def _regexes(patterns: list[str]) -> list[str]:
    _compile(patterns)
    return patterns


def _check_commands(commands: list[str]) -> list[str]:
    bad = [c for c in commands if c not in COMMANDS]
    if bad:
        raise ValueError(f"unknown SMTP command(s) {bad}; use one of {sorted(COMMANDS)}")
    return commands


#: A reason of :data:`mailwarden.events.REASONS`.
Reason = Annotated[str, AfterValidator(_check_reason)]
#: ``match``: one regex or a list of them, each checked, at least one.
Regexes = Annotated[
    list[str],
    Field(min_length=1),
    BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
    AfterValidator(_regexes),
]
#: SMTP stages of :data:`COMMANDS`.
Commands = Annotated[list[str], AfterValidator(_check_commands)]


class Sample(_Model):
    """A real reply a pattern was written for, and what the whole classifier must say about it.

    Unset expectations default to the owning pattern's own values (its id, reason, scope,
    issuer). ``host`` is the relay the reply came from (defaults to the provider's first MX
    suffix for provider patterns); ``remote = false`` marks a Postfix-written text.
    """

    reply: str = Field(min_length=1)
    command: str = ""
    dsn: str = ""
    outcome: str = ""  # the delivery outcome passed as ``status=`` ("expired": a final report)
    host: str = ""
    remote: bool = True
    rule: str | None = None
    reason: Reason | None = None
    scope: Scope | None = None
    issuer: str | None = None
    url: str | None = None
    cited_ip: str | None = None
    internal: bool | None = None
    source: str = ""
    note: str = ""


def _samples(value: Any) -> Any:
    if isinstance(value, list):
        return [{"reply": v} if isinstance(v, str) else v for v in value]
    return value


#: ``samples``: :class:`Sample` tables, or bare reply strings.
Samples = Annotated[list[Sample], BeforeValidator(_samples)]


class Pattern(_Model):
    """One rule: a regex over the folded reply text, optional conditions, and its verdict."""

    id: Annotated[str, Field(pattern=_ID)]
    # may be empty only for internal rules that classify their inner text
    reason: Annotated[str, AfterValidator(lambda v: v if v == "" else _check_reason(v))] = ""
    scope: Scope | None = None  # None: the reason's default scope
    issuer: str = ""
    url: str = ""  # a fixed lookup/delisting URL for this verdict (used when the text has none)
    match: Regexes
    codes: list[str] = Field(default_factory=list)  # basic-code prefixes: "5", "55", "554"
    status: list[str] = Field(default_factory=list)  # enhanced-code prefixes: "5.7.", "4.7.28"
    commands: Commands = Field(default_factory=list)
    not_commands: Commands = Field(default_factory=list)
    before: str = ""  # local reasons.toml rules: try this rule before the one with this id
    inner: bool = False  # internal rules: classify the text after the match too
    anywhere: bool = False  # provider patterns: distinctive enough to try for any relay host
    cite: bool = True  # False for Postfix-written texts: an IP in them is the receiver's, not ours
    source: str = ""
    note: str = ""
    enabled: bool = True
    samples: Samples = Field(default_factory=list)

    def compiled(self) -> re.Pattern[str]:
        return _compile(self.match)


class ReasonsMeta(_Model):
    breaker_marker: str = Field(min_length=4)


class Remap(_Model):
    """Change a decided reason by what the reply alone cannot say: the SMTP stage it answered
    (``commands``; ``""`` names an unknown stage) or the outcome of the delivery (``outcomes``,
    the ``status`` passed to the classifier: ``"expired"`` for a final report after retries).

    ``status`` narrows it to enhanced codes with these prefixes; ``keep_status`` exempts codes
    that decide on their own (a 5.1.1 stays an unknown user at any stage). Only verdicts of the
    generic tables and code fallbacks are remapped: a provider's own rule knows better.
    """

    id: Annotated[str, Field(pattern=_ID)]
    from_: Reason = Field(alias="from")
    to: Reason
    commands: list[str] = Field(default_factory=list)
    outcomes: list[str] = Field(default_factory=list)
    status: list[str] = Field(default_factory=list)
    keep_status: list[str] = Field(default_factory=list)
    source: str = ""
    note: str = ""
    enabled: bool = True
    samples: Samples = Field(default_factory=list)

    @field_validator("commands")
    @classmethod
    def _commands(cls, v: list[str]) -> list[str]:
        _check_commands([c for c in v if c])  # "" (stage unknown) is allowed here
        return v

    @field_validator("outcomes")
    @classmethod
    def _outcomes(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if o not in OUTCOMES]
        if bad:
            raise ValueError(f"unknown outcome(s) {bad}; use one of {sorted(OUTCOMES)}")
        return v

    @model_validator(mode="after")
    def _some_condition(self) -> Remap:
        if not self.commands and not self.outcomes:
            raise ValueError(f"remap {self.id}: needs commands or outcomes")
        return self


class ReasonsTable(_Model):
    """``reasons.toml``: internal deferrals, generic phrases (ordered), code fallbacks."""

    meta: ReasonsMeta
    scope: dict[str, Scope]
    internal: list[Pattern] = Field(default_factory=list)
    rule: list[Pattern] = Field(min_length=1)
    remap: list[Remap] = Field(default_factory=list)
    status: dict[str, str] = Field(default_factory=dict)  # "5.1.1" -> reason
    subject: dict[str, str] = Field(default_factory=dict)  # "5.6" -> reason (class.subject)
    code: dict[str, str] = Field(default_factory=dict)  # "521" -> reason
    command: dict[str, str] = Field(default_factory=dict)  # "CONNECT" -> reason (for 5xx)

    @field_validator("internal")
    @classmethod
    def _anchored(cls, v: list[Pattern]) -> list[Pattern]:
        for p in v:
            bad = [m for m in p.match if not m.startswith("^")]
            if bad:
                raise ValueError(f"internal pattern {p.id}: must start with ^ (got {bad})")
        return v

    @field_validator("scope")
    @classmethod
    def _scope_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            _check_reason(k)
        missing = [r for r in REASONS if r not in v]
        if missing:
            raise ValueError(f"no default scope for reason(s) {missing}")
        return v

    @field_validator("status", "subject", "code", "command")
    @classmethod
    def _values(cls, v: dict[str, str]) -> dict[str, str]:
        for r in v.values():
            _check_reason(r)
        return v


class Issuer(_Model):
    """A blocklist or reputation service that replies name (Spamhaus, Cloudmark ...)."""

    id: Annotated[str, Field(pattern=_ID)]
    name: str
    match: Regexes
    lookup_url: str = ""  # "{ip}" is replaced by the cited IP
    reason: Reason = "blocked"  # verdict when the reply names the issuer and nothing else decides
    historic: bool = False
    source: str = ""
    note: str = ""
    enabled: bool = True
    samples: Samples = Field(default_factory=list)

    def compiled(self) -> re.Pattern[str]:
        return _compile(self.match)


class IssuersTable(_Model):
    issuer: list[Issuer] = Field(min_length=1)


def _suffix(value: str) -> str:
    v = value.strip().lower().strip(".")
    if not v or not re.fullmatch(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*", v):
        raise ValueError(f"bad host name suffix {value!r}")
    return v


class Provider(_Model):
    """``providers/<name>.toml``: who a receiver is, how to recognise it, what it says."""

    name: Annotated[str, Field(pattern=_ID)]
    display: str
    mx_suffixes: list[str] = Field(min_length=1)
    domains: list[str] = Field(default_factory=list)
    postmaster_url: str = ""
    delisting_url: str = ""
    include: list[str] = Field(default_factory=list)  # other providers whose patterns apply too
    source: str = ""
    note: str = ""
    pattern: list[Pattern] = Field(default_factory=list)

    @field_validator("mx_suffixes", "domains")
    @classmethod
    def _norm(cls, v: list[str]) -> list[str]:
        return [_suffix(s) for s in v]


def validate(model: type[_Model], data: dict[str, Any], path: Path | str) -> Any:
    """Validate ``data`` as ``model``; errors become a :class:`TableError` naming ``path``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise TableError(f"{path}: invalid table:\n" + "\n".join(lines)) from exc
