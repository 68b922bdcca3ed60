"""Opening the store (URLs, SQLite WAL, errors) and retention (both backends)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from mailwarden.errors import StoreError
from mailwarden.store import schema
from mailwarden.store.db import normalise_url, open_engine
from mailwarden.store.ingest import Batch
from mailwarden.store.retention import prune
from store.test_ingest import T0, att, first_import, msg, write

DAY = 86400.0


def test_sqlite_store_is_created_with_wal_in_a_new_directory(tmp_path: Path) -> None:
    db = tmp_path / "state" / "sub" / "mw.db"
    e = open_engine(f"sqlite:///{db}")
    e.dispose()
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "messages",
        "attempts",
        "rejections",
        "origins",
        "inbound_rejects",
        "daily_rollups",
        "imports",
    } <= names


def test_bad_urls_and_unwritable_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="invalid database URL"):
        open_engine("not a url")
    with pytest.raises(StoreError, match="unsupported database"):
        open_engine("mysql://x@localhost/db")
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "f").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot"):
        open_engine(f"sqlite:///{ro / 'f' / 'x.db'}")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="cannot open the store"):
        open_engine(f"sqlite:///{garbage}")


def _n(engine: Engine, t: object) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(t)).scalar_one())  # type: ignore[arg-type]


def test_prune_drops_old_detail_and_keeps_rollups(engine: Engine) -> None:
    old = first_import()
    new = Batch(
        messages=[msg("NEW0000001", T0 + 100 * DAY)],
        attempts=[att(0, T0 + 100 * DAY + 1, "x@gmail.test", "sent", provider="accept")],
    )
    write(engine, old, new)
    assert (_n(engine, schema.attempts), _n(engine, schema.messages)) == (4, 3)
    now = T0 + 100 * DAY + 10
    dry = prune(engine, attempts_days=90, rollup_days=730, now=now, dry_run=True)
    assert (dry.attempts, dry.messages, dry.inbound, dry.rollups) == (3, 2, 1, 0)
    assert _n(engine, schema.attempts) == 4  # dry run changed nothing
    res = prune(engine, attempts_days=90, rollup_days=730, now=now)
    assert (res.attempts, res.messages, res.inbound, res.rollups, res.rejections) == (3, 2, 1, 0, 0)
    assert _n(engine, schema.attempts) == 1
    assert _n(engine, schema.messages) == 1
    assert _n(engine, schema.daily_rollups) == 3  # two days of the old import + one new
    # two years later the old day's rollups go too, and the rejection kind nobody references
    res = prune(engine, attempts_days=90, rollup_days=730, now=T0 + 800 * DAY)
    assert (res.rollups, res.rejections) == (2, 1)
    assert _n(engine, schema.daily_rollups) == 1
    with pytest.raises(ValueError):
        prune(engine, attempts_days=0)
