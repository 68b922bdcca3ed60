"""Breaker tables: the current state per (provider, sending IP), every transition (the history
``mailwarden breaker history`` shows and the alerts were sent for), and the rule hits that count
towards ``N/window`` triggers, so that state and windows survive restarts.

Declared on the shared :data:`mailwarden.store.schema.metadata`; written by
:mod:`mailwarden.breaker.engine` and the ``breaker`` CLI, read by the dashboard. Rows go in and
come out as plain mappings (the field names of ``breaker.machine.BreakerState`` and
``Transition``), so the store does not import the breaker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    Column,
    Double,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)

from mailwarden.store.db import write_transaction
from mailwarden.store.schema import PK, metadata

breaker_state = Table(
    "breaker_state",
    metadata,
    Column("provider", String(255), primary_key=True),
    Column("ip", String(64), primary_key=True, server_default=""),
    Column("state", String(16), nullable=False),
    Column("since", Double, nullable=False),
    Column("until", Double),  # NULL: no timer (closed, or open until a person closes it)
    Column("level", Integer, nullable=False, server_default="0"),
    Column("rule", String(128), nullable=False, server_default=""),
    Column("reply", Text, nullable=False, server_default=""),
    Column("issuer", String(64), nullable=False, server_default=""),
    Column("url", Text, nullable=False, server_default=""),
    Column("reason", Text, nullable=False, server_default=""),
    Column("slow_transport", String(32), nullable=False, server_default=""),
    Column("actor", String(16), nullable=False, server_default=""),
    Column("note", Text, nullable=False, server_default=""),
    Column("probe_round", Integer, nullable=False, server_default="0"),
    Column("trips", Integer, nullable=False, server_default="0"),
    Column("closed_at", Double),
    Column("updated", Double, nullable=False),
)

breaker_transitions = Table(
    "breaker_transitions",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("provider", String(255), nullable=False),
    Column("ip", String(64), nullable=False, server_default=""),
    Column("old", String(16), nullable=False),
    Column("new", String(16), nullable=False),
    Column("actor", String(16), nullable=False),
    Column("rule", String(128), nullable=False, server_default=""),
    Column("reply", Text, nullable=False, server_default=""),
    Column("issuer", String(64), nullable=False, server_default=""),
    Column("url", Text, nullable=False, server_default=""),
    Column("until", Double),
    Column("level", Integer, nullable=False, server_default="0"),
    Column("note", Text, nullable=False, server_default=""),
    Index("ix_breaker_transitions_provider_ts", "provider", "ts"),
)

breaker_hits = Table(
    "breaker_hits",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("provider", String(255), nullable=False),
    Column("ip", String(64), nullable=False, server_default=""),
    Column("rule", String(128), nullable=False),
    Index("ix_breaker_hits_ts", "ts"),
)

STATE_FIELDS = (
    "state",
    "since",
    "until",
    "level",
    "rule",
    "reply",
    "issuer",
    "url",
    "reason",
    "slow_transport",
    "actor",
    "note",
    "probe_round",
    "trips",
    "closed_at",
)
TRANSITION_FIELDS = (
    "ts",
    "provider",
    "ip",
    "old",
    "new",
    "actor",
    "rule",
    "reply",
    "issuer",
    "url",
    "until",
    "level",
    "note",
)


class BreakerStore:
    """Reads and writes the breaker tables of one store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load_states(self) -> list[dict[str, Any]]:
        """Every state row: ``provider``, ``ip`` and :data:`STATE_FIELDS`."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(breaker_state)).mappings().all()
        return [{k: r[k] for k in ("provider", "ip", *STATE_FIELDS)} for r in rows]

    def version(self) -> tuple[int, float]:
        """A cheap change detector: (rows, newest update) of the state table."""
        with self.engine.connect() as conn:
            n, newest = conn.execute(select(func.count(), func.max(breaker_state.c.updated))).one()
        return int(n), float(newest or 0.0)

    def save(
        self,
        states: Iterable[Mapping[str, Any]],
        transitions: Iterable[Mapping[str, Any]],
        now: float,
    ) -> None:
        """Upsert states and append transitions in one transaction."""
        sts = list(states)
        trs = list(transitions)
        if not sts and not trs:
            return
        with write_transaction(self.engine) as conn:
            for st in sts:
                values: dict[str, Any] = {f: st[f] for f in STATE_FIELDS}
                values["updated"] = now
                key = (breaker_state.c.provider == st["provider"], breaker_state.c.ip == st["ip"])
                done = conn.execute(breaker_state.update().where(*key).values(**values)).rowcount
                if not done:
                    conn.execute(
                        insert(breaker_state).values(provider=st["provider"], ip=st["ip"], **values)
                    )
            if trs:
                conn.execute(
                    insert(breaker_transitions), [{f: t[f] for f in TRANSITION_FIELDS} for t in trs]
                )

    def history(self, provider: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """Transitions, newest first."""
        q = select(breaker_transitions).order_by(
            breaker_transitions.c.ts.desc(), breaker_transitions.c.id.desc()
        )
        if provider:
            q = q.where(breaker_transitions.c.provider == provider)
        with self.engine.connect() as conn:
            rows = conn.execute(q.limit(limit)).mappings().all()
        return [{f: r[f] for f in TRANSITION_FIELDS} for r in rows]

    def add_hit(self, ts: float, provider: str, ip: str, rule: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(insert(breaker_hits).values(ts=ts, provider=provider, ip=ip, rule=rule))

    def hits_since(self, since: float) -> list[tuple[float, str, str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    breaker_hits.c.ts,
                    breaker_hits.c.provider,
                    breaker_hits.c.ip,
                    breaker_hits.c.rule,
                )
                .where(breaker_hits.c.ts >= since)
                .order_by(breaker_hits.c.ts)
            ).all()
        return [(float(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def prune_hits(self, before: float) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(delete(breaker_hits).where(breaker_hits.c.ts < before))
