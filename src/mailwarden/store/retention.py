"""Retention: delete detail rows past their age, keep the compact rollups much longer.

* attempts, connection-level replies (``mx_replies``) and inbound rejects older than
  ``attempts_days`` (``[store] attempts_days``, 90);
* messages older than that which have no attempt and no connection-level reply left;
* daily rollups older than ``rollup_days`` (``[store] rollup_days``, 730), and rejection kinds
  not seen for that long and no longer referenced.

Run by ``mailwarden store prune`` and at the end of every ``mailwarden analyze`` that stores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, Table, delete, exists, func, select

from mailwarden.store import schema
from mailwarden.store.db import write_transaction
from mailwarden.store.ingest import day_of

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class PruneResult:
    attempts: int
    messages: int
    inbound: int
    rollups: int
    rejections: int
    attempts_cutoff: float
    rollup_cutoff: float
    mx_replies: int = 0


def cutoffs(attempts_days: int, rollup_days: int, now: float | None = None) -> tuple[float, float]:
    """The POSIX times before which attempts and rollups are deleted."""
    t = time.time() if now is None else now
    return t - attempts_days * DAY, t - rollup_days * DAY


def prune(
    engine: Engine,
    *,
    attempts_days: int = 90,
    rollup_days: int = 730,
    now: float | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Delete what is older than the retention periods; return how many rows (would) go."""
    if attempts_days < 1 or rollup_days < 1:
        raise ValueError("retention periods are at least one day")
    a_cut, r_cut = cutoffs(attempts_days, rollup_days, now)
    a, m, ib = schema.attempts, schema.messages, schema.inbound_rejects
    ru, rj, x = schema.daily_rollups, schema.rejections, schema.mx_replies
    old_msgs = (
        (m.c.arrival < a_cut)
        & ~exists().where(a.c.message_pk == m.c.id)
        & ~exists().where(x.c.message_pk == m.c.id)
    )
    old_kinds = (
        (rj.c.last_seen < r_cut)
        & ~exists().where(a.c.rejection_id == rj.c.id)
        & ~exists().where(x.c.rejection_id == rj.c.id)
    )
    if dry_run:
        with engine.connect() as conn:

            def count(t: Table, cond: ColumnElement[bool]) -> int:
                return int(
                    conn.execute(select(func.count()).select_from(t).where(cond)).scalar() or 0
                )

            keeps = exists().where(a.c.message_pk == m.c.id, a.c.ts >= a_cut)
            keeps_x = exists().where(x.c.message_pk == m.c.id, x.c.ts >= a_cut)
            kept = exists().where(a.c.rejection_id == rj.c.id, a.c.ts >= a_cut)
            kept_x = exists().where(x.c.rejection_id == rj.c.id, x.c.ts >= a_cut)
            return PruneResult(
                count(a, a.c.ts < a_cut),
                count(m, (m.c.arrival < a_cut) & ~keeps & ~keeps_x),
                count(ib, ib.c.ts < a_cut),
                count(ru, ru.c.day < day_of(r_cut)),
                count(rj, (rj.c.last_seen < r_cut) & ~kept & ~kept_x),
                a_cut,
                r_cut,
                count(x, x.c.ts < a_cut),
            )
    with write_transaction(engine) as conn:
        n_att = conn.execute(delete(a).where(a.c.ts < a_cut)).rowcount
        n_x = conn.execute(delete(x).where(x.c.ts < a_cut)).rowcount
        n_msg = conn.execute(delete(m).where(old_msgs)).rowcount
        n_ib = conn.execute(delete(ib).where(ib.c.ts < a_cut)).rowcount
        n_ru = conn.execute(delete(ru).where(ru.c.day < day_of(r_cut))).rowcount
        n_rj = conn.execute(delete(rj).where(old_kinds)).rowcount
    return PruneResult(n_att, n_msg, n_ib, n_ru, n_rj, a_cut, r_cut, n_x)
