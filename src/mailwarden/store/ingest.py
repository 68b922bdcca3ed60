"""Ingestion: compact rows from the analyze workers into the store, idempotently.

The analyze workers (see :mod:`mailwarden.pipeline`) build :class:`~mailwarden.store.rows.Batch`
objects of plain tuples, laid out as the ``*_COLUMNS`` of :mod:`mailwarden.store.rows`. A
:class:`Writer` writes them, each batch inside :func:`mailwarden.store.db.write_transaction`
(or all of them in one, when used alone):

* message ids are allocated by the writer per batch under the write lock, so attempts reference
  new messages without a round trip per row, and concurrent writers never collide;
* importing the same lines twice adds nothing: messages already in the store (natural key
  ``(arrival, host, qid)``) are matched, and only their attempts not yet stored are added; every
  insert is also an insert-or-ignore on the natural unique keys, as a safety net;
* rejection kinds are upserted once per kind, and their counts and the daily rollups are
  updated from the rows that were really new, so counts never double;
* attempts older than the retention cut-off are not stored (they would be pruned at once), but
  still counted in the rollups;
* connection-level replies (``Batch.mx``, table ``mx_replies``) are matched on their natural
  key ``(ts, host, key)``; the new ones add to their kind's count (not to the rollups);
* a bulk load into an empty store builds the secondary indexes at the end
  (:func:`defer_indexes` / :func:`restore_indexes`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Index, and_, bindparam, func, select, tuple_, update

from mailwarden.store import schema
from mailwarden.store.bulk import BulkStatement, insert_rows, upsert_add
from mailwarden.store.rows import (
    A_KIND,
    A_MSG,
    A_PROVIDER,
    A_RCPT,
    A_REASON,
    A_STATUS,
    A_TS,
    ATTEMPT_COLUMNS,
    INBOUND_COLUMNS,
    KIND_COLUMNS,
    M_ARRIVAL,
    M_BOUNCE_OF,
    M_EXPIRED,
    M_HOST,
    M_MSGID,
    M_NRCPT,
    M_OIDENT,
    M_OKIND,
    M_ONAME,
    M_QID,
    M_REMOVED,
    M_SENDER,
    M_SIZE,
    MESSAGE_COLUMNS,
    MX_COLUMNS,
    X_KEY,
    X_KIND,
    X_MSG,
    X_PROVIDER,
    X_TS,
    Batch,
)

_DB_ATTEMPT_COLUMNS = (
    "message_pk",
    "ts",
    "recipient",
    "orig_recipient",
    "relay_host",
    "relay_ip",
    "relay_port",
    "provider",
    "delay",
    "delays",
    "dsn",
    "status",
    "conn_use",
    "code",
    "enhanced",
    "rejection_id",
)
_DB_MESSAGE_COLUMNS = (
    "id",
    "host",
    "qid",
    "arrival",
    "origin_id",
    "sender",
    "message_id",
    "size",
    "nrcpt",
    "bounce_of",
    "expired_at",
    "removed_at",
)
_DB_MX_COLUMNS = ("message_pk", *MX_COLUMNS[1:-1], "rejection_id")
_CHUNK = 500  # bound parameters per IN (...) query


@dataclass(slots=True)
class ImportStats:
    """What one import added (duplicates are what was already there)."""

    messages: int = 0
    messages_known: int = 0
    attempts: int = 0
    attempts_known: int = 0
    attempts_expired: int = 0  # older than the retention cut-off: counted in rollups only
    inbound: int = 0
    kinds: int = 0
    mx_replies: int = 0  # connection-level replies stored


def day_of(ts: float) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(ts // 86400))


@dataclass(frozen=True, slots=True)
class ImportBase:
    """What the store held when an import began; shared by every writer of that import."""

    max_id: int  # messages with a higher id were written by this import
    lo: float | None  # arrival span of the messages stored before
    hi: float | None


def snapshot(conn: Connection) -> ImportBase:
    m = schema.messages
    max_id, lo, hi = conn.execute(
        select(func.max(m.c.id), func.min(m.c.arrival), func.max(m.c.arrival))
    ).one()
    return ImportBase(max_id or 0, lo, hi)


def _secondary_indexes() -> list[Index]:
    return [
        ix
        for t in (schema.messages, schema.attempts, schema.inbound_rejects, schema.mx_replies)
        for ix in sorted(t.indexes, key=lambda i: str(i.name))
    ]


def defer_indexes(conn: Connection) -> bool:
    """Before a bulk load into an *empty* store: drop the secondary indexes, so they are built
    once at the end (a sort) instead of taking a million random keys one by one (half the
    CPU of a first import, measured). Returns whether they were dropped; put them back with
    :func:`restore_indexes` (which :func:`mailwarden.store.db.open_engine` also does)."""
    if not _is_empty(conn):
        return False
    for ix in _secondary_indexes():
        ix.drop(conn, checkfirst=True)
    return True


def restore_indexes(conn: Connection) -> None:
    """Create every secondary index of the spine's tables that is missing."""
    for ix in _secondary_indexes():
        ix.create(conn, checkfirst=True)


class Writer:
    """Writes batches of one import; call :meth:`finish` once at the end.

    Alone (``base`` None) it snapshots the store itself and, for an empty store, defers the
    secondary indexes until :meth:`finish`; give every call the same connection and commit
    after :meth:`finish`. Several writers of one import (one per worker process) share a
    ``base`` taken by the coordinator, and each :meth:`write` runs in its own write
    transaction (``conn`` argument). Message ids are allocated per batch under the write lock
    (the highest stored id plus one onwards), so writers, and concurrent imports, never
    collide.
    """

    def __init__(
        self,
        conn: Connection,
        *,
        attempts_cutoff: float | None = None,
        base: ImportBase | None = None,
    ) -> None:
        self.conn = conn
        self.cutoff = attempts_cutoff if attempts_cutoff is not None else float("-inf")
        self.stats = ImportStats()
        alone = base is None
        if base is None:
            base = snapshot(conn)
        self._old_lo, self._old_hi = base.lo, base.hi
        self._max_old_id: int = base.max_id  # messages with a higher id are from this import
        self._origins: dict[tuple[str, str], int] = {}
        self._kinds: dict[tuple[str, str], int] = {}
        self._kind_new: dict[int, list[float]] = {}  # id -> [count, first, last]
        self._rollups: dict[tuple[int, str, str, int, str, str], int] = {}
        self._links: dict[tuple[str, str], str] = {}  # (host, dsn qid) -> original qid
        self._dsn_candidates: dict[tuple[str, str], int] = {}  # (host, qid) -> id, bounce_of ""
        self._link_updates: list[tuple[str, int]] = []
        self._linked: set[tuple[str, str]] = set()  # written with bounce_of, link not seen yet
        self._deferred = alone and base.max_id == 0 and defer_indexes(conn)
        self._ins_messages = insert_rows(conn, schema.messages, _DB_MESSAGE_COLUMNS, ignore=True)
        self._ins_attempts = insert_rows(conn, schema.attempts, _DB_ATTEMPT_COLUMNS, ignore=True)
        self._ins_inbound = insert_rows(conn, schema.inbound_rejects, INBOUND_COLUMNS, ignore=True)
        self._ins_mx = insert_rows(conn, schema.mx_replies, _DB_MX_COLUMNS, ignore=True)

    def unresolved_links(self) -> list[tuple[str, str, str]]:
        """``(host, dsn qid, original qid)`` whose notification message this writer did not
        see (another writer stored it): for :func:`apply_links` after all writers finished."""
        return [(h, q, o) for (h, q), o in self._links.items()]

    # ---------------------------------------------------------------------------------------
    def write(self, batch: Batch, conn: Connection | None = None) -> None:
        if conn is not None:
            self.conn = conn
        if batch.links:
            self._take_links(batch.links)
        if batch.kinds:
            self._resolve_kinds(batch.kinds)
        msg_ids, msg_origin, known = self._write_messages(batch.messages)
        if batch.attempts:
            self._write_attempts(batch, msg_ids, msg_origin, known)
        if batch.inbound:
            self.stats.inbound += self._ins_inbound.run(self.conn, batch.inbound)
        if batch.mx:
            self._write_mx(batch.mx, msg_ids)

    def finish(self, conn: Connection | None = None) -> ImportStats:
        """Apply the accumulated counts: rollups, rejection kinds, late bounce links."""
        if conn is not None:
            self.conn = conn
        conn = self.conn
        if self._rollups:
            stmt = upsert_add(
                conn,
                schema.daily_rollups,
                ("day", "host", "provider", "origin_id", "status", "reason", "count"),
                key=("day", "host", "provider", "origin_id", "status", "reason"),
                add=("count",),
            )
            epoch = dt.date(1970, 1, 1)
            stmt.run(
                conn,
                [
                    (epoch + dt.timedelta(days=k[0]), k[1], k[2], k[3], k[4], k[5], n)
                    for k, n in self._rollups.items()
                ],
            )
            self._rollups.clear()
        if self._kind_new:
            r = schema.rejections
            stmt_k = update(r).where(r.c.id == bindparam("kid"))
            conn.execute(
                stmt_k.values(
                    count=r.c.count + bindparam("n"),
                    first_seen=_least(conn, r.c.first_seen, bindparam("f")),
                    last_seen=_greatest(conn, r.c.last_seen, bindparam("l")),
                ),
                [
                    {"kid": kid, "n": int(v[0]), "f": v[1], "l": v[2]}
                    for kid, v in self._kind_new.items()
                ],
            )
            self._kind_new.clear()
        if self._link_updates:
            m = schema.messages
            conn.execute(
                update(m)
                .where(and_(m.c.id == bindparam("mid"), m.c.bounce_of == ""))
                .values(bounce_of=bindparam("orig")),
                [{"mid": mid, "orig": orig} for orig, mid in self._link_updates],
            )
            self._link_updates.clear()
        if self._deferred:
            restore_indexes(conn)
            self._deferred = False
        return self.stats

    # ---------------------------------------------------------------------------------------
    def _take_links(self, links: Iterable[tuple[str, str, str]]) -> None:
        for host, dsn_qid, orig in links:
            key = (host, dsn_qid)
            if key in self._linked:  # the correlator linked it already
                self._linked.discard(key)
                continue
            mid = self._dsn_candidates.pop(key, None)
            if mid is not None:
                self._link_updates.append((orig, mid))
            else:
                self._links[key] = orig

    def _origin_id(self, kind: str, ident: str, name: str) -> int:
        key = (kind, ident)
        oid = self._origins.get(key)
        if oid is None:
            o = schema.origins
            q = select(o.c.id).where(o.c.kind == kind, o.c.ident == ident)
            oid = self.conn.execute(q).scalar()
            if oid is None:
                insert_rows(self.conn, o, ("kind", "ident", "name"), ignore=True).run(
                    self.conn, [(kind, ident, name)]
                )
                oid = self.conn.execute(q).scalar_one()
            elif name:
                self.conn.execute(
                    update(o).where(o.c.id == oid, o.c.name != name).values(name=name)
                )
            self._origins[key] = oid
        return oid

    def _resolve_kinds(self, kinds: dict[tuple[str, str], tuple[Any, ...]]) -> None:
        """Learn the rejection ids of the batch's ``(provider, kind)`` keys, inserting new kinds."""
        r = schema.rejections
        missing = [k for k in kinds if k not in self._kinds]
        for i in range(0, len(missing), _CHUNK):
            part = missing[i : i + _CHUNK]
            q = select(r.c.id, r.c.provider, r.c.kind).where(
                tuple_(r.c.provider, r.c.kind).in_(part)
            )
            for kid, prov, kind in self.conn.execute(q):
                self._kinds[(prov, kind)] = kid
        new = [kinds[k] for k in missing if k not in self._kinds]
        if new:
            stmt = insert_rows(self.conn, r, (*KIND_COLUMNS, "count"), ignore=True)
            self.stats.kinds += stmt.run(
                self.conn, [(*row[:13], row[13], row[14], 0) for row in new]
            )
            keys = [(row[0], row[1]) for row in new]
            for i in range(0, len(keys), _CHUNK):
                part = keys[i : i + _CHUNK]
                q = select(r.c.id, r.c.provider, r.c.kind).where(
                    tuple_(r.c.provider, r.c.kind).in_(part)
                )
                for kid, prov, kind in self.conn.execute(q):
                    self._kinds[(prov, kind)] = kid

    def _existing(self, rows: Sequence[tuple[Any, ...]]) -> dict[tuple[float, str, str], int]:
        """Messages of ``rows`` already stored before this import (natural key -> id).

        Looked up by queue id (indexed), not by the batch's arrival span: one late message (an
        expiry five days after its arrival) would otherwise make every batch read days of rows.
        """
        if self._max_old_id == 0 or not rows:
            return {}
        lo = min(r[M_ARRIVAL] for r in rows)
        hi = max(r[M_ARRIVAL] for r in rows)
        if self._old_hi is None or hi < self._old_lo or lo > self._old_hi:
            return {}
        m = schema.messages
        wanted = {(r[M_ARRIVAL], r[M_HOST], r[M_QID]) for r in rows}
        qids = sorted({r[M_QID] for r in rows})
        out: dict[tuple[float, str, str], int] = {}
        for i in range(0, len(qids), _CHUNK):
            q = select(m.c.id, m.c.arrival, m.c.host, m.c.qid).where(
                m.c.qid.in_(qids[i : i + _CHUNK]), m.c.id <= self._max_old_id
            )
            for mid, a, h, qid in self.conn.execute(q):
                if (a, h, qid) in wanted:
                    out[(a, h, qid)] = mid
        return out

    def _write_messages(self, rows: list[tuple[Any, ...]]) -> tuple[list[int], list[int], set[int]]:
        existing = self._existing(rows)
        ids: list[int] = []
        origin_of: list[int] = []
        known: set[int] = set()
        new_rows: list[tuple[Any, ...]] = []
        updates: list[dict[str, Any]] = []
        links = self._links
        m = schema.messages
        # under the write lock: nobody else allocates between this and the insert
        next_id = (self.conn.execute(select(func.max(m.c.id))).scalar() or 0) + 1
        fast = _accelerator()
        if fast is not None:
            # the same loop in C (the writer holds the store's write lock meanwhile)
            origins = self._origins
            for r in rows:  # origins first, in order of appearance, as the loop meets them
                if (r[M_OKIND], r[M_OIDENT]) not in origins:
                    self._origin_id(r[M_OKIND], r[M_OIDENT], r[M_ONAME])
            ids, origin_of, known, new_rows, updates, next_id = fast.db_messages(
                rows, next_id, origins, links, self._linked, self._dsn_candidates, existing
            )
        for r in [] if fast is not None else rows:
            oid = self._origin_id(r[M_OKIND], r[M_OIDENT], r[M_ONAME])
            origin_of.append(oid)
            host, qid = r[M_HOST], r[M_QID]
            bounce_of = r[M_BOUNCE_OF]
            if bounce_of:
                if links.pop((host, qid), None) is None:
                    self._linked.add((host, qid))  # its link may still come: nothing to do then
            else:
                bounce_of = links.pop((host, qid), "")
            mid = existing.get((r[M_ARRIVAL], host, qid))
            if mid is not None:
                ids.append(mid)
                known.add(mid)
                updates.append(
                    {
                        "mid": mid,
                        "exp": r[M_EXPIRED],
                        "rem": r[M_REMOVED],
                        "bo": bounce_of,
                    }
                )
                continue
            mid = next_id
            next_id += 1
            ids.append(mid)
            if not bounce_of and not r[M_SENDER]:
                self._dsn_candidates[(host, qid)] = mid
            new_rows.append(
                (
                    mid,
                    host,
                    qid,
                    r[M_ARRIVAL],
                    oid,
                    r[M_SENDER],
                    r[M_MSGID],
                    r[M_SIZE],
                    r[M_NRCPT],
                    bounce_of,
                    r[M_EXPIRED],
                    r[M_REMOVED],
                )
            )
        if new_rows:
            inserted = self._ins_messages.run(self.conn, new_rows)
            if inserted != len(new_rows):
                # Some natural keys were there already (a duplicate within this import or a
                # concurrent writer): point their attempts at the stored rows instead.
                self._remap(rows, ids, new_rows)
            self.stats.messages += inserted
        if updates:
            self.stats.messages_known += len(updates)
            m = schema.messages
            self.conn.execute(
                update(m)
                .where(m.c.id == bindparam("mid"))
                .values(
                    expired_at=func.coalesce(bindparam("exp"), m.c.expired_at),
                    removed_at=func.coalesce(bindparam("rem"), m.c.removed_at),
                    bounce_of=func.coalesce(func.nullif(bindparam("bo"), ""), m.c.bounce_of),
                ),
                updates,
            )
        return ids, origin_of, known

    def _remap(
        self, rows: list[tuple[Any, ...]], ids: list[int], new_rows: list[tuple[Any, ...]]
    ) -> None:
        m = schema.messages
        wanted = {(nr[3], nr[1], nr[2]): nr[0] for nr in new_rows}
        lo = min(k[0] for k in wanted)
        hi = max(k[0] for k in wanted)
        q = select(m.c.id, m.c.arrival, m.c.host, m.c.qid).where(
            m.c.arrival >= lo, m.c.arrival <= hi
        )
        stored = {(a, h, qid): mid for mid, a, h, qid in self.conn.execute(q)}
        fix = {
            wanted_id: stored[key]
            for key, wanted_id in wanted.items()
            if key in stored and stored[key] != wanted_id
        }
        # Within this batch a repeated key got two ids; both must map to the stored one.
        for i, r in enumerate(rows):
            key = (r[M_ARRIVAL], r[M_HOST], r[M_QID])
            if key in stored:
                ids[i] = stored[key]
        for i, mid in enumerate(ids):
            ids[i] = fix.get(mid, mid)

    def _known_attempts(self, known: set[int]) -> set[tuple[int, str, float]]:
        a = schema.attempts
        out: set[tuple[int, str, float]] = set()
        ids = sorted(known)
        for i in range(0, len(ids), _CHUNK):
            q = select(a.c.message_pk, a.c.recipient, a.c.ts).where(
                a.c.message_pk.in_(ids[i : i + _CHUNK])
            )
            out.update((mp, rc, ts) for mp, rc, ts in self.conn.execute(q))
        return out

    def _write_attempts(
        self,
        batch: Batch,
        msg_ids: list[int],
        msg_origin: list[int],
        known: set[int],
    ) -> None:
        seen = self._known_attempts(known) if known else set()
        host_of = [r[M_HOST] for r in batch.messages]
        out: list[tuple[Any, ...]] = []
        rollups = self._rollups
        kind_new = self._kind_new
        kind_ids = self._kinds
        cutoff = self.cutoff
        dups = expired = 0
        fast = _accelerator()
        if fast is not None:
            out, dups, expired = fast.db_attempts(
                batch.attempts, msg_ids, host_of, msg_origin, kind_ids, rollups, kind_new,
                cutoff, seen,
            )  # fmt: skip
        for r in [] if fast is not None else batch.attempts:
            i = r[A_MSG]
            mid = msg_ids[i]
            ts = r[A_TS]
            if seen and (mid, r[A_RCPT], ts) in seen:
                dups += 1
                continue
            kid = kind_ids[(r[A_PROVIDER], r[A_KIND])] if r[A_KIND] else None
            key = (
                int(ts // 86400),
                host_of[i],
                r[A_PROVIDER],
                msg_origin[i],
                r[A_STATUS],
                r[A_REASON],
            )
            rollups[key] = rollups.get(key, 0) + 1
            if kid is not None:
                c = kind_new.get(kid)
                if c is None:
                    kind_new[kid] = [1, ts, ts]
                else:
                    c[0] += 1
                    if ts < c[1]:
                        c[1] = ts
                    if ts > c[2]:
                        c[2] = ts
            if ts < cutoff:
                expired += 1
                continue
            out.append((mid, *r[1:15], kid))
        self.stats.attempts_known += dups
        self.stats.attempts_expired += expired
        if out:
            self.stats.attempts += self._ins_attempts.run(self.conn, out)

    def _write_mx(self, rows: list[tuple[Any, ...]], msg_ids: list[int]) -> None:
        """Connection-level replies (``MX_COLUMNS``): the new ones stored, counted in their
        kinds; those stored before (a file read again) left alone."""
        x = schema.mx_replies
        keys = sorted({(r[X_TS], r[1], r[X_KEY]) for r in rows})
        have: set[tuple[float, str, str]] = set()
        for i in range(0, len(keys), _CHUNK):
            q = select(x.c.ts, x.c.host, x.c.key).where(
                tuple_(x.c.ts, x.c.host, x.c.key).in_(keys[i : i + _CHUNK])
            )
            have.update((ts, h, k) for ts, h, k in self.conn.execute(q))
        kind_new = self._kind_new
        out: list[tuple[Any, ...]] = []
        for r in rows:
            ts = r[X_TS]
            nat = (ts, r[1], r[X_KEY])
            if nat in have:
                continue
            have.add(nat)
            kid = self._kinds[(r[X_PROVIDER], r[X_KIND])] if r[X_KIND] else None
            if kid is not None:
                c = kind_new.get(kid)
                if c is None:
                    kind_new[kid] = [1, ts, ts]
                else:
                    c[0] += 1
                    c[1] = min(c[1], ts)
                    c[2] = max(c[2], ts)
            if ts < self.cutoff:  # counted in its kind, pruned at once: not stored
                continue
            mid = msg_ids[r[X_MSG]] if r[X_MSG] >= 0 else None
            out.append((mid, *r[1:-1], kid))
        if out:
            self.stats.mx_replies += self._ins_mx.run(self.conn, out)


def _accelerator() -> Any:
    """The C loops of this writer (``mailwarden.sources._postfixscan``), or None (not built,
    or ``MAILWARDEN_PURE_PYTHON=1``): the Python loops are the reference."""
    from mailwarden.sources import accel

    return accel.extension() if accel.available() else None


def apply_links(conn: Connection, links: Iterable[tuple[str, str, str]], base: ImportBase) -> int:
    """Set ``bounce_of`` on notification messages of this import (id above ``base.max_id``)
    from ``(host, dsn qid, original qid)`` links; returns how many were set."""
    m = schema.messages
    b = base.max_id
    rows = [(h, q, o, b, "") for h, q, o in links]
    if not rows:
        return 0
    stmt = (
        update(m)
        .where(
            m.c.host == bindparam("h"),
            m.c.qid == bindparam("q"),
            m.c.id > bindparam("b"),
            m.c.bounce_of == bindparam("e"),
        )
        .values(bounce_of=bindparam("o"))
    )
    # tuples straight to the driver (a bounce link per DSN message of the other worker)
    return BulkStatement(conn, stmt, ("h", "q", "o", "b", "e")).run(conn, rows)


def _is_empty(conn: Connection) -> bool:
    return all(
        conn.execute(select(t.c.id).limit(1)).first() is None
        for t in (schema.messages, schema.attempts, schema.inbound_rejects, schema.mx_replies)
    )


def _least(conn: Connection, a: Any, b: Any) -> Any:
    return func.min(a, b) if conn.dialect.name == "sqlite" else func.least(a, b)


def _greatest(conn: Connection, a: Any, b: Any) -> Any:
    return func.max(a, b) if conn.dialect.name == "sqlite" else func.greatest(a, b)


__all__ = [
    "ATTEMPT_COLUMNS",
    "INBOUND_COLUMNS",
    "KIND_COLUMNS",
    "MESSAGE_COLUMNS",
    "Batch",
    "BulkStatement",
    "ImportBase",
    "ImportStats",
    "Writer",
    "apply_links",
    "day_of",
    "defer_indexes",
    "restore_indexes",
    "snapshot",
]
