"""Connection-level replies in the store: their own table, their message, their kind's count."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy import func, select

from mailwarden.pipeline import analyze
from mailwarden.store import schema
from mailwarden.store.db import open_engine
from mailwarden.store.retention import prune

DATA = Path(__file__).resolve().parents[1] / "data" / "sources"
NOV_30 = 1795910400.0  # the log's lines are of 2026


def _log(tmp: Path) -> Path:
    p = tmp / "mx.log"
    shutil.copy(DATA / "mx-replies.log", p)
    os.utime(p, (NOV_30, NOV_30))
    return p


def test_stored_with_their_message_and_counted_in_their_kind(
    tmp_path: Path, store_url: str
) -> None:
    url = store_url
    doc = analyze([_log(tmp_path)], db_url=url, workers=1, attempts_days=3650).document
    assert doc["store"]["mx_replies"] == doc["totals"]["mx_replies"] == 16
    x, m, r, a = schema.mx_replies, schema.messages, schema.rejections, schema.attempts
    engine = open_engine(url, create=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(m.c.qid, x.c.what, x.c.relay_host, x.c.provider, x.c.code, x.c.command)
                .select_from(x.outerjoin(m, m.c.id == x.c.message_pk))
                .order_by(x.c.ts, x.c.id)
            ).all()
            # a greeting block at the first MX of a message its second MX accepted
            assert ("8D6F116A177", "refused", "mx1.a-prov.de", "a-prov.de", 554, "CONNECT") in rows
            # the connect line no process claimed: no message
            assert (None, "connect", "mx1.z-prov.de", "z-prov.de", None, "CONNECT") in rows
            # every kind's count: its attempts and its connection-level replies
            counts = dict(conn.execute(select(r.c.id, r.c.count)).all())
            n_att = dict(
                conn.execute(
                    select(a.c.rejection_id, func.count()).group_by(a.c.rejection_id)
                ).all()
            )
            n_mx = dict(
                conn.execute(
                    select(x.c.rejection_id, func.count()).group_by(x.c.rejection_id)
                ).all()
            )
            assert counts == {k: n_att.get(k, 0) + n_mx.get(k, 0) for k in counts}
            by_provider = dict(
                conn.execute(select(r.c.provider, func.sum(r.c.count)).group_by(r.c.provider)).all()
            )
    finally:
        engine.dispose()
    report = {p["provider"]: sum(k["count"] for k in p["rejections"]) for p in doc["providers"]}
    assert by_provider == {p: n for p, n in report.items() if n}


def test_retention_removes_them_with_the_attempts(tmp_path: Path, store_url: str) -> None:
    url = store_url
    analyze([_log(tmp_path)], db_url=url, workers=1, attempts_days=3650)
    engine = open_engine(url, create=False)
    try:
        kept = prune(engine, attempts_days=3650, now=NOV_30)
        assert kept.mx_replies == 0
        dry = prune(engine, attempts_days=1, now=NOV_30 + 30 * 86400, dry_run=True)
        assert dry.mx_replies == 16
        done = prune(engine, attempts_days=1, now=NOV_30 + 30 * 86400)
        assert (done.mx_replies, done.messages) == (16, 9)
        with engine.connect() as conn:
            for t in (schema.mx_replies, schema.messages, schema.attempts):
                assert conn.execute(select(func.count()).select_from(t)).scalar() == 0
    finally:
        engine.dispose()
