"""Keying the breaker and egress tables by host (fleet mode), for stores made before they were.

The first version of ``breaker_state``, ``breaker_transitions``, ``breaker_hits``,
``egress_events``, ``egress_summary`` and ``egress_alerts`` had no ``host`` column, so two hosts
sharing one PostgreSQL store overwrote each other's breakers. :func:`upgrade` runs after every
``metadata.create_all`` (inside :func:`mailwarden.store.db.open_engine`'s locked transaction,
through the ``after_create`` hook the table modules register) and adds the column where it is
missing, with ``''`` for the rows already there; ``breaker_state`` also gets the host into its
primary key. :func:`claim` then hands those unkeyed rows to the first host that opens the
store with its name (before fleet keys the tables held exactly one host's, or one shared set).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, Engine, Table, inspect, text, update

from mailwarden.store.db import is_sqlite, write_transaction

#: Longest host name stored (DNS name length).
HOST_LEN = 255


def has_host(conn: Connection, table: str) -> bool:
    """Whether ``table`` exists and already has the ``host`` column (False when missing)."""
    insp = inspect(conn)
    if not insp.has_table(table):
        return True  # nothing to upgrade: create_all made it (or will) with the column
    return any(c["name"] == "host" for c in insp.get_columns(table))


def add_host_column(conn: Connection, table: str) -> None:
    """``ALTER TABLE ... ADD COLUMN host`` (``''`` for the existing rows)."""
    conn.execute(
        text(f"ALTER TABLE {table} ADD COLUMN host VARCHAR({HOST_LEN}) NOT NULL DEFAULT ''")
    )


def rekey_with_host(conn: Connection, table: Table) -> None:
    """Add ``host`` to ``table`` and to the front of its primary key.

    PostgreSQL: add the column, swap the primary key constraint. SQLite cannot alter a primary
    key: the old table is renamed, the new one created from ``table`` and the rows copied."""
    name = table.name
    if is_sqlite(conn):
        old = f"{name}_before_host"
        conn.execute(text(f"ALTER TABLE {name} RENAME TO {old}"))
        table.create(conn)
        cols = [c.name for c in table.columns if c.name != "host"]
        have = {c["name"] for c in inspect(conn).get_columns(old)}
        keep = [c for c in cols if c in have]
        listed = ", ".join(f'"{c}"' for c in keep)
        conn.execute(text(f"INSERT INTO {name} (host, {listed}) SELECT '', {listed} FROM {old}"))
        conn.execute(text(f"DROP TABLE {old}"))
        return
    pk = inspect(conn).get_pk_constraint(name)
    add_host_column(conn, name)
    if pk.get("name"):
        conn.execute(text(f'ALTER TABLE {name} DROP CONSTRAINT "{pk["name"]}"'))
    keys = ", ".join(c.name for c in table.primary_key.columns)
    conn.execute(text(f"ALTER TABLE {name} ADD CONSTRAINT pk_{name} PRIMARY KEY ({keys})"))


def upgrade(conn: Connection, rekeyed: Iterable[Table], added: Iterable[Table]) -> None:
    """Bring the given tables up to their host-keyed form (no-op when they are)."""
    for t in rekeyed:
        if not has_host(conn, t.name):
            rekey_with_host(conn, t)
    for t in added:
        if not has_host(conn, t.name):
            add_host_column(conn, t.name)


def claim(engine: Engine, host: str, tables: Iterable[Table], *, unique: Table | None) -> int:
    """Give rows without a host (from before fleet keys) to ``host``; returns rows claimed.

    ``unique`` is the table whose key is (host, rest): an unkeyed row whose rest the host
    already has is older than the host's own and is dropped instead."""
    if not host:
        return 0
    tables = list(tables)
    with engine.connect() as conn:
        pending = any(
            conn.execute(
                t.select().with_only_columns(t.c.host).where(t.c.host == "").limit(1)
            ).first()
            is not None
            for t in tables
        )
    if not pending:
        return 0
    n = 0
    with write_transaction(engine) as conn:
        if unique is not None:
            rest = [c for c in unique.primary_key.columns if c.name != "host"]
            mine = unique.alias("mine")
            clash = (
                mine.select()
                .with_only_columns(mine.c.host)
                .where(mine.c.host == host, *[mine.c[c.name] == c for c in rest])
                .exists()
            )
            conn.execute(unique.delete().where(unique.c.host == "", clash))
        for t in tables:
            n += conn.execute(update(t).where(t.c.host == "").values(host=host)).rowcount or 0
    return n
