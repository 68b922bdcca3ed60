"""Tables of the daemon (``mailwarden run``): follow positions, SASL failures, alerts and the
small state the scheduled jobs keep. Declared on the shared
:data:`mailwarden.store.schema.metadata`; every row carries the ``host`` that wrote it, so that
several hosts can share one PostgreSQL store (fleet mode).

* :data:`service_checkpoints`: per (host, source) the follow position of the log *and* the
  correlator's open messages, written in the same transaction as the rows they led to, so that a
  daemon killed at any moment resumes with nothing lost and nothing counted twice;
* :data:`sasl_failures`: one row per ``SASL ... authentication failed`` line (natural key
  ``(ts, host, key)``: importing a line twice adds nothing);
* :data:`alerts`: every alert raised (breaker transition, blocklist listing, egress, spike, SASL
  burst ...), its dedup ``key``, severity, text and JSON ``data``;
* :data:`alert_deliveries`: one row per alert per channel: sent, failed or suppressed (duplicate
  within the dedup window, or over the channel's rate), the basis of dedup and rate limits;
* :data:`service_state`: small JSON documents per (host, name): the last blocklist answers, the
  last run of each scheduled job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
)

from mailwarden.store.bulk import insert_rows, update_or_insert
from mailwarden.store.db import connected
from mailwarden.store.schema import PK, metadata

service_checkpoints = Table(
    "service_checkpoints",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("source", Text, primary_key=True),  # log path, or "journal:"
    Column("data", Text, nullable=False),  # JSON: {"checkpoint": {...}, "open": [...]}
    Column("updated", Double, nullable=False),
)

sasl_failures = Table(
    "sasl_failures",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("host", Text, nullable=False),
    Column("ts", Double, nullable=False),
    Column("key", String(40), nullable=False),  # hash of the line's content
    Column("client_name", Text, nullable=False, server_default=""),
    Column("client_ip", String(64), nullable=False, server_default=""),
    Column("method", String(32), nullable=False, server_default=""),
    Column("username", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
    UniqueConstraint("ts", "host", "key"),
    Index(None, "client_ip"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("host", Text, nullable=False),
    Column("kind", String(32), nullable=False),  # breaker, dnsbl, egress, spike, sasl, report
    Column("key", Text, nullable=False),  # dedup key, e.g. "dnsbl:spamhaus-zen:192.0.2.1"
    Column("severity", String(16), nullable=False),  # info, warning, critical
    Column("title", Text, nullable=False),
    Column("text", Text, nullable=False, server_default=""),
    Column("data", Text, nullable=False, server_default="{}"),  # JSON
    Index(None, "ts"),
    Index(None, "key"),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("alert_id", PK, nullable=False),
    Column("host", Text, nullable=False),
    Column("channel", String(32), nullable=False),
    Column("key", Text, nullable=False),
    Column("ts", Double, nullable=False),
    Column("status", String(16), nullable=False),  # sent, failed, duplicate, rate-limited
    Column("error", Text, nullable=False, server_default=""),
    Index(None, "channel", "key", "ts"),
    Index(None, "channel", "ts"),
)

service_state = Table(
    "service_state",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),  # JSON
    Column("updated", Double, nullable=False),
)

#: Order of the tuples handed to :func:`insert_sasl`.
SASL_COLUMNS = ("host", "ts", "key", "client_name", "client_ip", "method", "username", "detail")


def _json_scalar(bind: Engine | Connection, q: Select[Any]) -> Any:
    """The JSON text ``q`` selects, decoded; None when there is no row or it is not JSON."""
    with connected(bind) as conn:
        raw = conn.execute(q).scalar()
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# -- checkpoints ------------------------------------------------------------------------------
def load_checkpoint(bind: Engine | Connection, host: str, source: str) -> dict[str, Any] | None:
    t = service_checkpoints
    data = _json_scalar(bind, select(t.c.data).where(t.c.host == host, t.c.source == source))
    return data if isinstance(data, dict) else None


def save_checkpoint(
    conn: Connection, host: str, source: str, data: dict[str, Any] | str, now: float
) -> None:
    """Upsert one checkpoint (``data``: a dict, or its JSON text already encoded)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    update_or_insert(
        conn, service_checkpoints, {"host": host, "source": source}, {"data": text, "updated": now}
    )


# -- SASL failures ---------------------------------------------------------------------------
def insert_sasl(conn: Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert-or-ignore rows laid out as :data:`SASL_COLUMNS`; returns how many were new."""
    if not rows:
        return 0
    return insert_rows(conn, sasl_failures, SASL_COLUMNS, ignore=True).run(conn, rows)


# -- state -----------------------------------------------------------------------------------
def get_state(bind: Engine | Connection, host: str, name: str) -> Any:
    t = service_state
    return _json_scalar(bind, select(t.c.value).where(t.c.host == host, t.c.name == name))


def set_state(conn: Connection, host: str, name: str, value: Any, now: float) -> None:
    update_or_insert(
        conn,
        service_state,
        {"host": host, "name": name},
        {"value": json.dumps(value, sort_keys=True), "updated": now},
    )


# -- alerts ----------------------------------------------------------------------------------
def add_alert(conn: Connection, row: dict[str, Any]) -> int:
    """Insert one alert (``data`` as a dict); returns its id."""
    values = dict(row)
    values["data"] = json.dumps(values.get("data") or {}, sort_keys=True, default=str)
    return int(conn.execute(alerts.insert().values(**values).returning(alerts.c.id)).scalar_one())


def last_sent(conn: Connection, channel: str, key: str) -> float | None:
    """When an alert with ``key`` last went out through ``channel`` (None: never)."""
    d = alert_deliveries
    q = select(func.max(d.c.ts)).where(d.c.channel == channel, d.c.key == key, d.c.status == "sent")
    v = conn.execute(q).scalar()
    return float(v) if v is not None else None


def sent_since(conn: Connection, channel: str, since: float) -> int:
    d = alert_deliveries
    q = select(func.count()).where(d.c.channel == channel, d.c.ts >= since, d.c.status == "sent")
    return int(conn.execute(q).scalar() or 0)


def add_deliveries(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    if rows:
        conn.execute(alert_deliveries.insert(), rows)


__all__ = [
    "SASL_COLUMNS",
    "add_alert",
    "add_deliveries",
    "alert_deliveries",
    "alerts",
    "get_state",
    "insert_sasl",
    "last_sent",
    "load_checkpoint",
    "sasl_failures",
    "save_checkpoint",
    "sent_since",
    "service_checkpoints",
    "service_state",
    "set_state",
]
