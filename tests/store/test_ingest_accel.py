"""The store writer's loops in C (``db_messages``, ``db_attempts``) against the Python loops.

Every table after the same sequence of imports (a fresh store, the same files again, a grown
file, another log) must be identical, row for row and id for id, with and without the C
accelerator (``MAILWARDEN_PURE_PYTHON=1`` runs the pure-Python reference end to end).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import pytest

from mailwarden.sources import accel

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
_TIMES = {"started", "finished", "path", "inode"}  # of the imports table: differ per run


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    from sqlalchemy import select

    from mailwarden.store import schema
    from mailwarden.store.db import open_engine

    engine = open_engine(url, create=False)
    out = {}
    try:
        with engine.connect() as conn:
            for t in (
                schema.origins,
                schema.messages,
                schema.rejections,
                schema.attempts,
                schema.inbound_rejects,
                schema.mx_replies,
                schema.daily_rollups,
                schema.imports,
            ):
                cols = [c for c in t.columns if c.name not in _TIMES]
                order = list(t.primary_key.columns)
                out[t.name] = [tuple(r) for r in conn.execute(select(*cols).order_by(*order))]
    finally:
        engine.dispose()
    return out


def imports(tmp: Path, name: str, monkeypatch: pytest.MonkeyPatch, pure: bool) -> Any:
    from mailwarden.classify.engine import Classifier
    from mailwarden.pipeline import analyze

    if pure:
        monkeypatch.setenv("MAILWARDEN_PURE_PYTHON", "1")
    else:
        monkeypatch.delenv("MAILWARDEN_PURE_PYTHON", raising=False)
    assert accel.available() is not pure
    clf = Classifier.load()
    url = f"sqlite:///{tmp}/{name}.db"
    gen = gzip.decompress((DATA / "sources" / "genlog-5k.log.gz").read_bytes())
    grown = tmp / f"{name}-grown.log"
    grown.write_bytes(gen[: len(gen) // 2])
    os.utime(grown, (1795132800, 1795132800))
    real = DATA / "report" / "postfix-real.log"
    # connection-level replies: a log that grows too (its replies stored once)
    mxlog = (DATA / "sources" / "mx-replies.log").read_bytes()
    mx = tmp / f"{name}-mx.log"
    mx.write_bytes(mxlog[: mxlog.index(b"\n", len(mxlog) // 2) + 1])
    os.utime(mx, (1795910400, 1795910400))  # 2026-11-30: its lines are of this year
    docs = []
    for paths in (
        [grown, real, mx],
        [grown, real, mx],
        None,
        [DATA / "sources" / "genlog-3k-iso.log.gz"],
    ):
        if paths is None:  # the logs grew: the whole files, the first halves already stored
            grown.write_bytes(gen)
            os.utime(grown, (1795132800, 1795132800))
            mx.write_bytes(mxlog)
            os.utime(mx, (1795910400, 1795910400))
            paths = [grown, mx]
        doc = analyze(paths, db_url=url, workers=1, classifier=clf).document
        docs.append(doc["store"])
    return dump(url), docs


def test_the_store_is_the_same_with_and_without_the_c_loops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert accel.built()
    ref, ref_docs = imports(tmp_path, "pure", monkeypatch, pure=True)
    fast, fast_docs = imports(tmp_path, "fast", monkeypatch, pure=False)
    for i, (a, b) in enumerate(zip(ref_docs, fast_docs, strict=True)):
        a, b = dict(a), dict(b)
        a.pop("url"), b.pop("url")
        assert a == b, i
    assert ref_docs[1]["already_imported"]
    assert ref_docs[2]["messages_known"] > 0 and ref_docs[2]["attempts_known"] > 0
    for table in ref:
        assert fast[table] == ref[table], table
    assert len(ref["attempts"]) > 1500
    assert len(ref["mx_replies"]) == 16  # tests/data/sources/mx-replies.log, each once
    assert [d["mx_replies"] for d in ref_docs] == [8, 0, 8, 0]


def test_two_workers_store_what_one_stores(tmp_path: Path) -> None:
    """By natural keys (ids depend on how the workers' batches interleave): messages with
    their bounce links (a DSN message and its original may land in different workers:
    apply_links joins them), attempts, inbound rejects."""
    from sqlalchemy import select

    from mailwarden.classify.engine import Classifier
    from mailwarden.pipeline import analyze
    from mailwarden.store import schema
    from mailwarden.store.db import open_engine

    clf = Classifier.load()
    log = tmp_path / "gen.log"
    log.write_bytes(gzip.decompress((DATA / "sources" / "genlog-5k.log.gz").read_bytes()))
    os.utime(log, (1795132800, 1795132800))
    out = []
    for workers in (1, 2):
        url = f"sqlite:///{tmp_path}/w{workers}.db"
        analyze([log], db_url=url, workers=workers, classifier=clf)
        engine = open_engine(url, create=False)
        m, a, i = schema.messages, schema.attempts, schema.inbound_rejects
        with engine.connect() as conn:
            msgs = sorted(
                conn.execute(select(m.c.arrival, m.c.host, m.c.qid, m.c.bounce_of, m.c.sender))
            )
            atts = sorted(
                conn.execute(
                    select(m.c.qid, a.c.ts, a.c.recipient, a.c.status, a.c.provider).join(
                        m, m.c.id == a.c.message_pk
                    )
                )
            )
            inb = sorted(conn.execute(select(i.c.ts, i.c.key, i.c.client_ip)))
        engine.dispose()
        out.append((msgs, atts, inb))
    assert out[0] == out[1]
    msgs = out[0][0]
    assert sum(1 for r in msgs if r[3]) > 10  # bounce links were made
