"""The analyze report: mergeable aggregates, and the JSON document built from them.

Workers of :mod:`mailwarden.pipeline` each fill one :class:`Aggregate` from the complete
messages of their shard; the driver merges them (:meth:`Aggregate.merge`) and turns the result
into the report document (:func:`build_document`), whose layout is the stable schema of
``docs/analyze-json.md`` (JSON Schema: ``mailwarden/report/analyze.schema.json``). The rich
rendering (:mod:`mailwarden.report.render`) reads that same document, so both outputs always
show the same numbers.

Counting rules (also in the docs):

* a *recipient* is one ``to=`` address of one queue file; its final state is its last attempt:
  ``sent`` -> delivered; ``bounced`` -> bounced; ``deferred`` -> deferred (still undelivered at
  the end of the log) unless the message expired (then bounced, and counted as ``expired``);
* the provider of a recipient is the provider of its last attempt (relay MX -> provider table,
  else the organisational domain; ``local`` for local transports);
* a rejection kind counts *attempts* (each deferral of each retry counts once);
* Postfix's own deferrals (``Classification.internal``) are listed apart, never as a
  provider's rejections;
* a connection-level reply (:class:`mailwarden.events.MxReply`: smtp giving up on one MX host
  before the next, e.g. a greeting block at the first MX while the backup accepts) counts
  once, under the provider of that MX, in the same rejection kinds as status lines
  (``mx_replies`` says how many of a kind's ``count`` they are); it changes no recipient's
  state. The last MX's failure is only counted from the status lines (Postfix repeats a
  ``connect to`` failure there; :class:`mailwarden.sources.postfix.ConnectClaims`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SCHEMA_ID = "mailwarden.analyze/1"
TOP_PROVIDERS = 5
MAX_CLIENTS = 1000  # distinct clients remembered per inbound reject kind


@dataclass(slots=True)
class KindAgg:
    """One rejection kind (per provider) or internal deferral kind."""

    reason: str
    scope: str
    code: int | None
    enhanced: str
    command: str
    issuer: str
    url: str
    cited_ip: str
    rule: str
    sample: str
    count: int = 0
    first: float = float("inf")
    last: float = float("-inf")

    def add(self, ts: float, n: int = 1) -> None:
        self.count += n
        if ts < self.first:
            self.first = ts
        if ts > self.last:
            self.last = ts

    def merge(self, o: KindAgg) -> None:
        """Add ``o``; the sample (and what was read from it) is the earliest occurrence's, so
        the result does not depend on the order of merging."""
        if (o.first, o.sample) < (self.first, self.sample):
            self.sample, self.cited_ip, self.url = o.sample, o.cited_ip, o.url
            self.issuer, self.rule, self.command = o.issuer, o.rule, o.command
        self.count += o.count
        self.first = min(self.first, o.first)
        self.last = max(self.last, o.last)


@dataclass(slots=True)
class ProviderAgg:
    recipients: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    expired: int = 0  # part of bounced
    attempts: int = 0
    kinds: dict[str, KindAgg] = field(default_factory=dict)
    mx_replies: int = 0  # connection-level replies (MxReply) of this provider's MX hosts
    mx: dict[str, KindAgg] = field(default_factory=dict)  # their kinds (same keys as kinds)

    def merge(self, o: ProviderAgg) -> None:
        self.recipients += o.recipients
        self.delivered += o.delivered
        self.deferred += o.deferred
        self.bounced += o.bounced
        self.expired += o.expired
        self.attempts += o.attempts
        _merge_kinds(self.kinds, o.kinds)
        self.mx_replies += o.mx_replies
        _merge_kinds(self.mx, o.mx)


@dataclass(slots=True)
class OriginAgg:
    name: str = ""
    messages: int = 0
    recipients: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    providers: Counter[str] = field(default_factory=Counter)

    def merge(self, o: OriginAgg) -> None:
        self.name = self.name or o.name
        self.messages += o.messages
        self.recipients += o.recipients
        self.delivered += o.delivered
        self.deferred += o.deferred
        self.bounced += o.bounced
        self.providers.update(o.providers)


@dataclass(slots=True)
class InboundAgg:
    action: str
    stage: str
    code: int | None
    enhanced: str
    sample: str
    count: int = 0
    first: float = float("inf")
    last: float = float("-inf")
    clients: Counter[str] = field(default_factory=Counter)

    def add(self, ts: float, client: str) -> None:
        self.count += 1
        if ts < self.first:
            self.first = ts
        if ts > self.last:
            self.last = ts
        if client in self.clients or len(self.clients) < MAX_CLIENTS:
            self.clients[client] += 1

    def merge(self, o: InboundAgg) -> None:
        if (o.first, o.sample) < (self.first, self.sample):
            self.sample = o.sample
        self.count += o.count
        self.first = min(self.first, o.first)
        self.last = max(self.last, o.last)
        for c, n in o.clients.items():
            if c in self.clients or len(self.clients) < MAX_CLIENTS:
                self.clients[c] += n


@dataclass(slots=True)
class Aggregate:
    """Everything the report needs, additive over disjoint sets of messages."""

    messages: int = 0
    recipients: int = 0
    attempts: int = 0
    first_ts: float = float("inf")
    last_ts: float = float("-inf")
    outside_period: int = 0  # events dropped by --since/--until
    providers: dict[str, ProviderAgg] = field(default_factory=dict)
    internal: dict[str, KindAgg] = field(default_factory=dict)
    mx_internal: dict[str, KindAgg] = field(default_factory=dict)  # MxReply, internal kinds
    origins: dict[tuple[str, str], OriginAgg] = field(default_factory=dict)
    inbound: dict[str, InboundAgg] = field(default_factory=dict)
    sasl_failures: Counter[str] = field(default_factory=Counter)  # client ip -> count

    def seen(self, ts: float) -> None:
        if ts < self.first_ts:
            self.first_ts = ts
        if ts > self.last_ts:
            self.last_ts = ts

    def provider(self, name: str) -> ProviderAgg:
        p = self.providers.get(name)
        if p is None:
            p = self.providers[name] = ProviderAgg()
        return p

    def origin(self, kind: str, ident: str, name: str) -> OriginAgg:
        o = self.origins.get((kind, ident))
        if o is None:
            o = self.origins[(kind, ident)] = OriginAgg(name=name)
        return o

    def merge(self, o: Aggregate) -> None:
        self.messages += o.messages
        self.recipients += o.recipients
        self.attempts += o.attempts
        self.first_ts = min(self.first_ts, o.first_ts)
        self.last_ts = max(self.last_ts, o.last_ts)
        self.outside_period += o.outside_period
        for k, p in o.providers.items():
            self.provider(k).merge(p)
        _merge_kinds(self.internal, o.internal)
        _merge_kinds(self.mx_internal, o.mx_internal)
        for key, og in o.origins.items():
            mine = self.origins.get(key)
            if mine is None:
                self.origins[key] = og
            else:
                mine.merge(og)
        for k, ib in o.inbound.items():
            have = self.inbound.get(k)
            if have is None:
                self.inbound[k] = ib
            else:
                have.merge(ib)
        self.sasl_failures.update(o.sasl_failures)


def _combined(kinds: dict[str, KindAgg], mx: dict[str, KindAgg]) -> list[tuple[KindAgg, int]]:
    """The kinds of status lines and of connection-level replies as one list of (kind, how
    many of its count are connection-level); the inputs are left as they are. A kind seen in
    both keeps the status line's sample, as the store does (a message's status lines are
    stored before its connection-level replies)."""
    out: dict[str, tuple[KindAgg, int]] = {k: (v, 0) for k, v in kinds.items()}
    for k, v in mx.items():
        have = out.get(k)
        if have is None:
            out[k] = (v, v.count)
        else:
            both = dataclasses.replace(have[0])
            both.count += v.count
            both.first, both.last = min(both.first, v.first), max(both.last, v.last)
            out[k] = (both, v.count)
    return list(out.values())


def _merge_kinds(into: dict[str, KindAgg], other: dict[str, KindAgg]) -> None:
    for k, v in other.items():
        have = into.get(k)
        if have is None:
            into[k] = v
        else:
            have.merge(v)


# ------------------------------------------------------------------------------------------
# The JSON document
# ------------------------------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    """POSIX seconds -> ``2026-11-27T17:19:54Z`` (None for unknown/infinite)."""
    if ts is None or ts in (float("inf"), float("-inf")):
        return None
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (f".{d.microsecond:06d}Z" if d.microsecond else "Z")


def _ratio(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def _kind_json(k: KindAgg, mx: int = 0) -> dict[str, Any]:
    return {
        "reason": k.reason,
        "scope": k.scope,
        "code": k.code,
        "enhanced": k.enhanced,
        "command": k.command,
        "count": k.count,
        "first_seen": iso(k.first),
        "last_seen": iso(k.last),
        "issuer": k.issuer,
        "url": k.url,
        "cited_ip": k.cited_ip,
        "rule": k.rule,
        "sample": k.sample,
        "mx_replies": mx,
    }


def build_document(
    agg: Aggregate,
    *,
    lines: dict[str, Any],
    sources: list[dict[str, Any]],
    since: float | None = None,
    until: float | None = None,
    store: dict[str, Any] | None = None,
    unparsed: list[dict[str, Any]] | None = None,
    errors: list[str] | None = None,
    known_providers: frozenset[str] = frozenset(),
    generated: float | None = None,
) -> dict[str, Any]:
    """The report as plain JSON-able data, in the documented schema (docs/analyze-json.md)."""
    import time

    providers: list[dict[str, Any]] = []
    tot = {"delivered": 0, "deferred": 0, "bounced": 0}
    for name, p in agg.providers.items():
        kinds = sorted(
            _combined(p.kinds, p.mx), key=lambda km: (-km[0].count, km[0].reason, km[0].enhanced)
        )
        providers.append(
            {
                "provider": name,
                "known": name in known_providers,
                "recipients": p.recipients,
                "delivered": p.delivered,
                "deferred": p.deferred,
                "bounced": p.bounced,
                "expired": p.expired,
                "attempts": p.attempts,
                "mx_replies": p.mx_replies,
                "rejections": [_kind_json(k, mx) for k, mx in kinds],
            }
        )
        for key in tot:
            tot[key] += getattr(p, key)
    providers.sort(key=lambda d: (-(d["bounced"] + d["deferred"]), -d["recipients"], d["provider"]))
    origins: list[dict[str, Any]] = []
    for (kind, ident), o in agg.origins.items():
        top = sorted(o.providers.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_PROVIDERS]
        origins.append(
            {
                "kind": kind,
                "id": ident,
                "name": o.name,
                "messages": o.messages,
                "recipients": o.recipients,
                "delivered": o.delivered,
                "deferred": o.deferred,
                "bounced": o.bounced,
                "bounce_ratio": _ratio(o.bounced, o.recipients),
                "defer_ratio": _ratio(o.deferred, o.recipients),
                "top_providers": [{"provider": p, "recipients": n} for p, n in top],
            }
        )
    origins.sort(key=lambda d: (-d["messages"], d["kind"], d["id"]))
    internal = sorted(
        (k for k, _ in _combined(agg.internal, agg.mx_internal)), key=lambda k: (-k.count, k.reason)
    )
    inbound = []
    for ib in sorted(agg.inbound.values(), key=lambda i: (-i.count, i.action, i.sample)):
        top = sorted(ib.clients.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_PROVIDERS]
        inbound.append(
            {
                "action": ib.action,
                "stage": ib.stage,
                "code": ib.code,
                "enhanced": ib.enhanced,
                "count": ib.count,
                "clients": len(ib.clients),
                "top_clients": [{"client": c, "count": n} for c, n in top],
                "first_seen": iso(ib.first),
                "last_seen": iso(ib.last),
                "sample": ib.sample,
            }
        )
    sasl_top = sorted(agg.sasl_failures.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_PROVIDERS]
    doc: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "generated": iso(time.time() if generated is None else generated),
        "sources": sources,
        "errors": list(errors or []),
        "period": {
            "first": iso(agg.first_ts),
            "last": iso(agg.last_ts),
            "since": iso(since),
            "until": iso(until),
        },
        "lines": {**lines, "outside_period": agg.outside_period},
        "totals": {
            "messages": agg.messages,
            "recipients": agg.recipients,
            "attempts": agg.attempts,
            **tot,
            "mx_replies": sum(p.mx_replies for p in agg.providers.values()),
        },
        "providers": providers,
        "internal": [
            {
                "reason": k.reason,
                "count": k.count,
                "first_seen": iso(k.first),
                "last_seen": iso(k.last),
                "rule": k.rule,
                "sample": k.sample,
            }
            for k in internal
        ],
        "origins": origins,
        "inbound_rejects": {
            "total": sum(i["count"] for i in inbound),
            "kinds": inbound,
        },
        "sasl_failures": {
            "total": sum(agg.sasl_failures.values()),
            "top_clients": [{"client": c, "count": n} for c, n in sasl_top],
        },
        "store": store,
    }
    if unparsed is not None:
        doc["unparsed"] = unparsed
    return doc
