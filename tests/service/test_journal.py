"""``mailwarden run --journal``: the daemon follows the journal (a journalctl stand-in that
replays recorded records and then follows, as ``journalctl -f -o json`` does), is killed with
SIGKILL, resumes after the committed cursor, and stores exactly what a one-shot import of the
same log as a syslog file stores."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from service.helpers import (
    DaemonProc,
    dump_store,
    genlog,
    one_shot,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.slow]

FAKE = '''#!{python}
"""journalctl -f -o json stand-in: records of {data!r} after --after-cursor, then follows."""
import sys, time
args = sys.argv[1:]
after = next((a.split("=", 1)[1] for a in args if a.startswith("--after-cursor=")), None)
f = open({data!r}, "rb")
if after is not None:
    for line in iter(f.readline, b""):
        if (\'"__CURSOR":"%s"\' % after).encode() in line:
            break
while True:
    line = f.readline()
    if line.endswith(b"\\n"):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    else:
        f.seek(f.tell() - len(line))
        time.sleep(0.05)
'''


def to_journal(line: bytes, n: int) -> bytes:
    """One RFC 3339 syslog line -> the journalctl -o json record journald would have."""
    stamp, host, rest = line.decode().rstrip("\n").split(" ", 2)
    tag, msg = rest.split(": ", 1)
    prog, _, pid = tag.rstrip("]").partition("[")
    us = round(dt.datetime.fromisoformat(stamp).timestamp() * 1_000_000)
    rec = {
        "__CURSOR": f"s=abc;i={n:x};b=1;m={n:x};t={us:x};x={n:x}",
        "__REALTIME_TIMESTAMP": str(us),
        "_HOSTNAME": host,
        "SYSLOG_IDENTIFIER": prog,
        "SYSLOG_PID": pid,
        "_TRANSPORT": "syslog",
        "MESSAGE": msg,
    }
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def test_journal_followed_and_resumed_after_sigkill(tmp_path: Path) -> None:
    full = tmp_path / "full.log"
    lines = genlog(full, 2000, seed=13)
    records = [to_journal(line, i + 1) for i, line in enumerate(lines)]
    data = tmp_path / "journal.json"
    data.write_bytes(b"".join(records[:800]))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "journalctl"
    exe.write_text(FAKE.format(python=sys.executable, data=str(data)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    cfg = write_config(tmp_path / "mw.toml", tmp_path / "state", url, log={"journal": True})
    d = DaemonProc(cfg, tmp_path / "etc", ["--no-socketmap"], tmp_path / "run.log")
    d.env["PATH"] = f"{bindir}{os.pathsep}{d.env['PATH']}"

    def cursor_index() -> int:
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

    try:
        d.start()
        wait_for(lambda: cursor_index() == 800, 60, "first part")
        with data.open("ab") as f:
            f.write(b"".join(records[800:1400]))
        wait_for(lambda: cursor_index() > 800, 30, "following")
        d.kill9()
        with data.open("ab") as f:
            f.write(b"".join(records[1400:]))
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
