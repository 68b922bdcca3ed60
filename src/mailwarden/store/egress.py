"""Egress tables: raw connect events (kept a short window), summaries per
(host, uid, exe, unit, script, port, provider, allowed) with their distinct destinations, and
alerts.

Every row carries the ``host`` whose processes made the connections (the recording daemon's
name, as for the breaker tables), so a fleet sharing one PostgreSQL store keeps them apart;
stores made before the host key are upgraded when opened (:mod:`mailwarden.store._hostkey`).

Declared on the shared :data:`mailwarden.store.schema.metadata`; written by
:mod:`mailwarden.egress.summary`, read by ``mailwarden egress top`` and the dashboard.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    event,
)
from sqlalchemy.engine import Connection, Engine

from mailwarden.store import _hostkey
from mailwarden.store.schema import metadata

_HOST = String(_hostkey.HOST_LEN)

egress_events = Table(
    "egress_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("source", String(16), nullable=False),
    Column("uid", Integer),
    Column("user", String(64), nullable=False, default=""),
    Column("pid", Integer),
    Column("ppid", Integer),
    Column("comm", String(64), nullable=False, default=""),
    Column("exe", Text, nullable=False, default=""),
    Column("cmdline", Text, nullable=False, default="[]"),  # JSON array
    Column("cwd", Text, nullable=False, default=""),
    Column("script", Text, nullable=False, default=""),
    Column("pool", String(128), nullable=False, default=""),
    Column("unit", Text, nullable=False, default=""),
    Column("container", Text, nullable=False, default=""),
    Column("cgroup", Text, nullable=False, default=""),
    Column("parents", Text, nullable=False, default="[]"),  # JSON [[pid, comm], ...]
    Column("family", SmallInteger, nullable=False, default=4),
    Column("daddr", String(64), nullable=False),
    Column("dport", Integer, nullable=False),
    Column("saddr", String(64), nullable=False, default=""),
    Column("sport", Integer),
    Column("netns", BigInteger),
    Column("verdict", String(16), nullable=False, default=""),
    Column("allowed", Boolean, nullable=False, default=True),
    Column("mta", Boolean, nullable=False, default=False),
    Column("provider", String(128), nullable=False, default=""),
    Column("ptr", Text, nullable=False, default=""),
    Column("host", _HOST, nullable=False, server_default=""),
    Index("ix_egress_events_ts", "ts"),
)

egress_summary = Table(
    "egress_summary",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(40), nullable=False, unique=True),  # hash of host + the grouping tuple
    Column("uid", Integer, nullable=False),  # -1 = unknown
    Column("user", String(64), nullable=False, default=""),
    Column("exe", Text, nullable=False, default=""),
    Column("unit", Text, nullable=False, default=""),
    Column("script", Text, nullable=False, default=""),
    Column("port", Integer, nullable=False),
    Column("provider", String(128), nullable=False, default=""),
    Column("allowed", Boolean, nullable=False),
    Column("mta", Boolean, nullable=False, default=False),
    Column("count", Integer, nullable=False, default=0),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("destinations", Integer, nullable=False, default=0),  # distinct daddr
    Column("host", _HOST, nullable=False, server_default=""),
    Index("ix_egress_summary_last_seen", "last_seen"),
)

egress_summary_dest = Table(
    "egress_summary_dest",
    metadata,
    Column(
        "summary_id",
        Integer,
        ForeignKey("egress_summary.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("daddr", String(64), primary_key=True),
    Column("count", Integer, nullable=False, default=0),
    Column("last_seen", Float, nullable=False),
)

egress_alerts = Table(
    "egress_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(40), nullable=False),  # hash of (host, who, port)
    Column("window_start", Float, nullable=False),
    Column("raised_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("uid", Integer, nullable=False),
    Column("user", String(64), nullable=False, default=""),
    Column("exe", Text, nullable=False, default=""),
    Column("unit", Text, nullable=False, default=""),
    Column("script", Text, nullable=False, default=""),
    Column("port", Integer, nullable=False),
    Column("count", Integer, nullable=False, default=0),
    Column("blocked", Integer, nullable=False, default=0),  # attempts the rule refused
    Column("evidence", Text, nullable=False, default="{}"),  # JSON, see summary.Alert
    Column("notified", Boolean, nullable=False, default=False),
    Column("host", _HOST, nullable=False, server_default=""),
    Index("ix_egress_alerts_key_window", "key", "window_start", unique=True),
)

EGRESS_TABLES = (egress_events, egress_summary, egress_alerts)


@event.listens_for(metadata, "after_create")
def _upgrade(target: Any, conn: Connection, **_kw: Any) -> None:
    """Stores from before the host key: add it (see :mod:`mailwarden.store._hostkey`)."""
    _hostkey.upgrade(conn, [], EGRESS_TABLES)


def claim_unkeyed(engine: Engine, host: str) -> int:
    """Give egress rows from before the host key to ``host`` (the first recorder to run)."""
    return _hostkey.claim(engine, host, EGRESS_TABLES, unique=None)
