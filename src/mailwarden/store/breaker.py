"""Breaker tables: the current state per (host, provider, sending IP), every transition (the
history ``mailwarden breaker history`` shows and the alerts were sent for), and the rule hits that
count towards ``N/window`` triggers, so that state and windows survive restarts.

Every row carries the ``host`` whose Postfix the breaker acts on (the daemon's name:
``--host`` / ``[log] host`` / the host name, :func:`mailwarden.service.daemon.host_id`), so
several hosts sharing one PostgreSQL store (fleet mode) keep independent breakers for the same
provider. :class:`BreakerStore` reads and writes one host's rows (what the engine of that host
uses); :func:`fleet_states`, :func:`fleet_history` and :func:`breaker_hosts` read across hosts
(``host=""``: the whole fleet) for the CLI, the dashboard and the reports. Stores made before
the host key are upgraded when opened (:mod:`mailwarden.store._hostkey`).

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
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    event,
    func,
    insert,
    select,
    union,
)

from mailwarden.store import _hostkey
from mailwarden.store.bulk import update_or_insert
from mailwarden.store.db import connected, write_transaction
from mailwarden.store.schema import PK, metadata

breaker_state = Table(
    "breaker_state",
    metadata,
    Column("host", String(_hostkey.HOST_LEN), primary_key=True, server_default=""),
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
    Column("host", String(_hostkey.HOST_LEN), nullable=False, server_default=""),
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
    Column("host", String(_hostkey.HOST_LEN), nullable=False, server_default=""),
    Index("ix_breaker_hits_ts", "ts"),
)


@event.listens_for(metadata, "after_create")
def _upgrade(target: Any, conn: Connection, **_kw: Any) -> None:
    """Stores from before the host key: add it (see :mod:`mailwarden.store._hostkey`)."""
    _hostkey.upgrade(conn, [breaker_state], [breaker_transitions, breaker_hits])


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
    """Reads and writes one host's rows of the breaker tables (the engine of that host)."""

    def __init__(self, engine: Engine, host: str) -> None:
        self.engine = engine
        self.host = host

    def claim_unkeyed(self) -> int:
        """Take over rows from before the host key (see :func:`_hostkey.claim`)."""
        return _hostkey.claim(
            self.engine,
            self.host,
            [breaker_state, breaker_transitions, breaker_hits],
            unique=breaker_state,
        )

    def load_states(self) -> list[dict[str, Any]]:
        """This host's state rows: ``provider``, ``ip`` and :data:`STATE_FIELDS`."""
        q = select(breaker_state).where(breaker_state.c.host == self.host)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [{k: r[k] for k in ("provider", "ip", *STATE_FIELDS)} for r in rows]

    def version(self) -> tuple[int, float]:
        """A cheap change detector: (rows, newest update) of this host's states."""
        t = breaker_state
        q = select(func.count(), func.max(t.c.updated)).where(t.c.host == self.host)
        with self.engine.connect() as conn:
            n, newest = conn.execute(q).one()
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
                keys = {"host": self.host, "provider": st["provider"], "ip": st["ip"]}
                update_or_insert(conn, breaker_state, keys, values)
            if trs:
                conn.execute(
                    insert(breaker_transitions),
                    [{"host": self.host, **{f: tr[f] for f in TRANSITION_FIELDS}} for tr in trs],
                )

    def history(self, provider: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """This host's transitions, newest first."""
        return [
            {f: r[f] for f in TRANSITION_FIELDS}
            for r in fleet_history(self.engine, host=self.host, provider=provider, limit=limit)
        ]

    def add_hit(self, ts: float, provider: str, ip: str, rule: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(breaker_hits).values(
                    ts=ts, provider=provider, ip=ip, rule=rule, host=self.host
                )
            )

    def hits_since(self, since: float) -> list[tuple[float, str, str, str]]:
        h = breaker_hits
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(h.c.ts, h.c.provider, h.c.ip, h.c.rule)
                .where(h.c.host == self.host, h.c.ts >= since)
                .order_by(h.c.ts)
            ).all()
        return [(float(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def newest_rule_activity(self) -> float:
        """The newest rule hit or rule-made transition of this host (0.0 when none): lines
        older than this were already counted before a restart."""
        h, t = breaker_hits, breaker_transitions
        with self.engine.connect() as c:
            a = c.execute(select(func.max(h.c.ts)).where(h.c.host == self.host)).scalar()
            b = c.execute(
                select(func.max(t.c.ts)).where(t.c.host == self.host, t.c.actor == "rule")
            ).scalar()
        return max(float(a or 0.0), float(b or 0.0))


# ------------------------------------------------------------------------ fleet-wide reads


def fleet_states(engine: Engine | Connection, host: str = "") -> list[dict[str, Any]]:
    """State rows of ``host`` (``""``: every host): ``host``, ``provider``, ``ip``,
    :data:`STATE_FIELDS` and ``updated``; ordered by host, provider, IP."""
    t = breaker_state
    q = select(t).order_by(t.c.host, t.c.provider, t.c.ip)
    if host:
        q = q.where(t.c.host == host)
    rows = _rows(engine, q)
    return [{k: r[k] for k in ("host", "provider", "ip", *STATE_FIELDS, "updated")} for r in rows]


def fleet_history(
    engine: Engine | Connection, *, host: str = "", provider: str = "", limit: int = 100
) -> list[dict[str, Any]]:
    """Transitions of ``host`` (``""``: every host), newest first, each with its ``host``."""
    t = breaker_transitions
    q = select(t).order_by(t.c.ts.desc(), t.c.id.desc()).limit(limit)
    if host:
        q = q.where(t.c.host == host)
    if provider:
        q = q.where(t.c.provider == provider)
    return [{"host": r["host"], **{f: r[f] for f in TRANSITION_FIELDS}} for r in _rows(engine, q)]


def breaker_hosts(engine: Engine | Connection) -> list[str]:
    """Every host that has a breaker state or transition."""
    q = union(select(breaker_state.c.host), select(breaker_transitions.c.host))
    return sorted({str(r[0]) for r in _rows(engine, q, mappings=False)})


def _rows(engine: Engine | Connection, q: Any, *, mappings: bool = True) -> list[Any]:
    with connected(engine) as conn:
        res = conn.execute(q)
        return list(res.mappings() if mappings else res)
