"""The ``imports`` table: which log files were imported, so the same file is not stored twice.

A file is identified by a fingerprint: the SHA-256 of its first line, its inode and its size.
A file counts as *already imported* when a row has the same first-line hash and inode and a
size at least as large (so a rotated file renamed to ``mail.log.1`` is still recognised). A file
that grew since, a copy, or a compressed archive of an imported file is read again; the writer
then adds only what is not stored yet (natural keys, see :mod:`mailwarden.store.ingest`), so
the result is the same, only slower.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, select

from mailwarden.store import schema
from mailwarden.store.bulk import update_or_insert
from mailwarden.store.ingest import ImportStats


class FingerprintLike(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def first_line_hash(self) -> str: ...
    @property
    def inode(self) -> int: ...
    @property
    def size(self) -> int: ...


def is_imported(conn: Connection, fp: FingerprintLike) -> bool:
    t = schema.imports
    q = select(t.c.id).where(
        t.c.first_line_hash == fp.first_line_hash,
        t.c.size >= fp.size,
        t.c.inode == fp.inode,
    )
    return conn.execute(q.limit(1)).first() is not None


def all_imported(conn: Connection, fps: Sequence[FingerprintLike]) -> bool:
    """True when every file was imported before with at least its present size."""
    return bool(fps) and all(is_imported(conn, fp) for fp in fps)


def record_imports(
    conn: Connection,
    fps: Sequence[FingerprintLike],
    bytes_read: dict[str, int],
    stats: ImportStats,
    started: float,
) -> None:
    """Insert or refresh one ``imports`` row per file. The row counts are per run."""
    t = schema.imports
    now = time.time()
    for fp in fps:
        values: dict[str, Any] = {
            "path": fp.path,
            "offset_done": bytes_read.get(fp.path, 0),
            "messages": stats.messages,
            "attempts": stats.attempts,
            "started": started,
            "finished": now,
        }
        keys = {"first_line_hash": fp.first_line_hash, "inode": fp.inode, "size": fp.size}
        update_or_insert(conn, t, keys, values)
