"""``mailwarden run --journal``: the daemon follows a real journal file through the real
``journalctl -f -o json`` (fixture ``real_journal``) while records are appended to it, is killed
with SIGKILL, resumes after the committed cursor, and stores exactly what a one-shot import of
the same log as a syslog file stores."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fixtures.journal import Journal, export_record, log_records, split_log
from service.helpers import (
    DaemonProc,
    dump_store,
    genlog,
    one_shot,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.slow]


def test_journal_followed_and_resumed_after_sigkill(tmp_path: Path, real_journal: Journal) -> None:
    full = tmp_path / "full.log"
    lines = genlog(full, 2000, seed=13)
    records = log_records(lines)
    ts = split_log(lines[:1])[0][0]
    marks = [0]  # foreign records written before the log's (the cursor's i= counts them too)

    def mark() -> None:
        marks[0] += 1
        real_journal.append([export_record(ts, "vm", "systemd", 1, b"mark", facility=3)])

    mark()  # the journal file exists before journalctl opens it
    url = f"sqlite:///{tmp_path / 'd.db'}"
    cfg = write_config(tmp_path / "mw.toml", tmp_path / "state", url, log={"journal": True})
    d = DaemonProc(cfg, tmp_path / "etc", ["--no-socketmap"], tmp_path / "run.log")
    d.env["PATH"] = f"{real_journal.exe.parent}{os.pathsep}{d.env['PATH']}"

    def seqnum() -> int:
        """The sequence number in the journal file (``i=`` of the cursor) of the last record the
        daemon committed; 0 before the first commit."""
        from sqlalchemy import select

        from mailwarden.store.db import open_engine
        from mailwarden.store.service import service_checkpoints as t

        e = open_engine(url)
        try:
            with e.connect() as c:
                raw = c.execute(select(t.c.data).where(t.c.source == "journal:")).scalar()
        finally:
            e.dispose()
        if raw is None:
            return 0
        cur = json.loads(raw)["cursor"]
        return int(cur.split(";")[1][2:], 16)

    def cursor_index() -> int:
        return seqnum() - marks[0]

    def following() -> bool:
        """A first start reads only what comes after the end of the journal (--lines=0): foreign
        records are written until the daemon has read one, then the log's records."""
        if seqnum() > 0:
            return True
        if real_journal.calls.exists():
            mark()
        return False

    try:
        d.start()
        wait_for(following, 60, "journalctl following", poll=0.5)
        real_journal.append(records[:800])
        wait_for(lambda: cursor_index() == 800, 60, "first part")
        real_journal.append(records[800:1400])
        wait_for(lambda: cursor_index() > 800, 30, "following")
        d.kill9()
        real_journal.append(records[1400:])
        d.start()
        wait_for(lambda: cursor_index() == len(records), 60, "all of it")
        assert d.term() == 0
    finally:
        d.stop()
    ref = f"sqlite:///{tmp_path / 'ref.db'}"
    one_shot(full, ref, d.env)
    got, want = dump_store(url), dump_store(ref)
    assert len(want["attempts"]) > 200
    for table in ("messages", "attempts", "rollups", "rejections", "inbound"):
        assert got[table] == want[table], table
