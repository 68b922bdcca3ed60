"""``mailwarden breaker replay``: run the rules over old logs without touching anything.

The same :class:`~mailwarden.breaker.engine.Engine` as the daemon, without store, view, hooks or
alerts, its clock driven by the log's own time stamps: trips, probes and re-opens happen when
they would have. The result lists every rule-made transition (``trips``) and the rules that
never matched a reply (a rule that never fires on real logs is worth a look, see KumoMTA's dead
rules in the research notes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailwarden.breaker.engine import ClassifierLike, Engine
from mailwarden.breaker.machine import Machine, Transition
from mailwarden.breaker.rules import RuleSet
from mailwarden.events import Delivery, MxReply, Unparsed


@dataclass(slots=True)
class ReplayResult:
    rules: RuleSet
    trips: list[Transition] = field(default_factory=list)
    matched_rules: dict[str, int] = field(default_factory=dict)
    deliveries: int = 0
    matched: int = 0
    unparsed: int = 0

    @property
    def never_matched(self) -> list[str]:
        return [r.id for r in self.rules.rules if r.id not in self.matched_rules]

    def to_json(self) -> dict[str, Any]:
        return {
            "trips": [
                {
                    "provider": t.provider,
                    "rule": t.rule,
                    "at": t.ts,
                    "reply": t.reply,
                    "to": t.new,
                    "from": t.old,
                    "until": t.until,
                    "issuer": t.issuer,
                }
                for t in self.trips
            ],
            "never_matched": self.never_matched,
            "matched": dict(sorted(self.matched_rules.items())),
            "deliveries": self.deliveries,
        }


def replay_events(
    events: Iterable[object],
    rules: RuleSet,
    classifier: ClassifierLike,
    *,
    probe_recipients: int = 3,
    probe_timeout: float = 600.0,
) -> ReplayResult:
    machine = Machine(rules, probe_recipients=probe_recipients, probe_timeout=probe_timeout)
    engine = Engine(rules=rules, classifier=classifier, machine=machine)
    res = ReplayResult(rules)
    for ev in events:
        if isinstance(ev, Unparsed):
            res.unparsed += 1
            continue
        if isinstance(ev, MxReply) and ev.reply is not None:
            ev = ev.as_attempt()  # a block at one MX trips like the same reply at the last
        if not isinstance(ev, Delivery):
            continue
        engine.tick(ev.ts)
        obs = engine.observe(ev)
        if obs is None:
            continue
        res.deliveries += 1
        if obs.match is not None:
            res.matched += 1
        res.trips.extend(t for t in obs.transitions if t.actor == "rule")
    res.matched_rules = dict(machine.matched)
    return res


def replay_files(
    paths: Iterable[Path],
    *,
    rules: RuleSet | None = None,
    classifier: ClassifierLike | None = None,
    probe_recipients: int = 3,
    probe_timeout: float = 600.0,
) -> ReplayResult:
    """Replay rotated/compressed Postfix logs, oldest first."""
    from mailwarden.classify import Classifier
    from mailwarden.sources.files import parse_files

    return replay_events(
        parse_files(list(paths)),
        rules or RuleSet.load(),
        classifier or Classifier.load(),
        probe_recipients=probe_recipients,
        probe_timeout=probe_timeout,
    )
