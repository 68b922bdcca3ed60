"""store.bulk: multi-row statements give the rows, the ids and the counts of one-row ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailwarden.store import bulk, schema
from mailwarden.store.db import open_engine, write_transaction


def _load(url: str, rows: list[tuple[Any, ...]], per: int | None) -> tuple[list[Any], int, int]:
    engine = open_engine(url)
    try:
        with write_transaction(engine) as conn:
            cols = ("kind", "ident", "name")
            stmt = bulk.insert_rows(conn, schema.origins, cols, ignore=True)
            if per is not None:
                stmt.per = 1 if per == 1 else stmt.per
            stmt.run(conn, [("bounce", "", "MAILER-DAEMON")])  # id 1, for the rollups
            first = stmt.run(conn, rows)
            again = stmt.run(conn, rows[::3])  # every third again: all conflicts
            add = bulk.upsert_add(
                conn,
                schema.daily_rollups,
                ("day", "host", "provider", "origin_id", "status", "reason", "count"),
                key=("day", "host", "provider", "origin_id", "status", "reason"),
                add=("count",),
            )
            if per == 1:
                add.per = 1
            import datetime as dt

            day = dt.date(2026, 11, 27)
            roll = [(day, "mail", f"p{i % 37}", 1, "sent", "", i) for i in range(260)]
            add.run(conn, roll)
        with engine.connect() as conn:
            got = [
                tuple(r) for r in conn.execute(select(schema.origins).order_by(schema.origins.c.id))
            ]
            got += [
                tuple(r)
                for r in conn.execute(
                    select(schema.daily_rollups).order_by(schema.daily_rollups.c.provider)
                )
            ]
    finally:
        engine.dispose()
    return got, first, again


@pytest.mark.parametrize("n", [0, 1, 99, 100, 101, 250, 1000])
def test_multi_row_statements_change_nothing(tmp_path: Path, n: int) -> None:
    rows = [("uid", str(i % (n // 2 + 1)), f"user{i}") for i in range(n)]  # duplicates inside
    one = _load(f"sqlite:///{tmp_path}/one.db", rows, per=1)
    many = _load(f"sqlite:///{tmp_path}/many.db", rows, per=None)
    assert many == one
    assert one[1] == len({r[:2] for r in rows}) and one[2] == 0


def test_a_wide_table_takes_fewer_rows_per_statement(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/w.db")
    try:
        with engine.connect() as conn:
            from mailwarden.store.ingest import _DB_ATTEMPT_COLUMNS

            stmt = bulk.insert_rows(conn, schema.attempts, _DB_ATTEMPT_COLUMNS, ignore=True)
            assert stmt.per == bulk.ROWS_PER_STATEMENT
            assert stmt.multi_sql.count("(?, ?") == stmt.per
            assert stmt.per * len(_DB_ATTEMPT_COLUMNS) <= bulk._MAX_PARAMS
    finally:
        engine.dispose()
