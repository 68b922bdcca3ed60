"""journald: recorded ``journalctl -o json`` records (exact journald layout) and live reading
through a journalctl process, resumed from a saved cursor."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path

from mailwarden.events import Delivery, LogLine, Removed, SaslFailure, Unparsed
from mailwarden.sources.follow import JsonCheckpointStore
from mailwarden.sources.journal import JournalReader, parse_journal, record_to_logline
from mailwarden.sources.postfix import parse_lines
from mailwarden.sources.stats import ParseStats

from .conftest import DATA, SAMPLE_LOG, utc_env

JOURNAL = DATA / "journal-sample.json"
ODD = DATA / "journal-odd.json"


def test_journal_records_give_the_same_events_as_the_syslog_file() -> None:
    with SAMPLE_LOG.open("rb") as fh:
        want = list(parse_lines(fh, env=utc_env()))
    stats = ParseStats()
    with JOURNAL.open("rb") as fh:
        got = list(parse_journal(fh, stats=stats))
    assert got == want
    assert stats.total == 197 and stats.unparsed == 0 and stats.foreign == 0


def test_record_to_logline() -> None:
    first = JOURNAL.read_bytes().splitlines()[2]
    ll = record_to_logline(first, offset=2)
    assert isinstance(ll, LogLine)
    rec = json.loads(first)
    assert ll.ts == int(rec["__REALTIME_TIMESTAMP"]) / 1e6
    assert (ll.host, ll.program, ll.pid, ll.message) == (
        "mail",
        "postfix/pickup",
        10914,
        rec["MESSAGE"],
    )
    assert (ll.source, ll.offset) == ("journal", 2)


def test_odd_records_byte_arrays_null_multivalue_foreign_and_junk() -> None:
    stats = ParseStats()
    out = list(parse_journal(ODD.read_bytes().splitlines(), stats=stats, yield_unparsed=True))
    deliveries = [e for e in out if isinstance(e, Delivery)]
    (d,) = deliveries
    assert d.recipient == "j\ufffdrg@bluewin.test"
    assert d.reply is not None and d.reply.text.startswith("Blocked \ufffd")
    assert [e.qid for e in out if isinstance(e, Removed)] == ["394D3162231"]  # first value
    (sasl,) = [e for e in out if isinstance(e, SaslFailure)]
    assert (sasl.client_ip, sasl.program) == ("203.0.113.77", "postfix/submission/smtpd")
    whys = sorted(u.why for u in out if isinstance(u, Unparsed))
    assert whys == ["bad timestamp", "message too large or missing", "not a journal record",
                    "not json"]  # fmt: skip
    assert stats.foreign == 1 and stats.programs["dovecot"] == 1
    assert stats.total == 8 == stats.parsed + stats.unparsed + stats.foreign + stats.ignored


FAKE_JOURNALCTL = '''#!{python}
"""A stand-in for journalctl: prints recorded records after --after-cursor, then follows."""
import sys, time
records = open({data!r}, "rb").read().splitlines(keepends=True)
args = sys.argv[1:]
open({argv_log!r}, "a").write(" ".join(args) + "\\n")
after = next((a.split("=", 1)[1] for a in args if a.startswith("--after-cursor=")), None)
start = 0
if after is not None:
    for i, r in enumerate(records):
        if after.encode() in r:
            start = i + 1
elif "--lines=0" in args:
    start = {start_at}
for r in records[start:]:
    sys.stdout.buffer.write(r)
    sys.stdout.buffer.flush()
time.sleep(60)  # -f: wait for more until terminated
'''


def make_journalctl(tmp_path: Path, start_at: int = 0) -> tuple[Path, Path]:
    exe = tmp_path / "journalctl"
    argv_log = tmp_path / "argv.log"
    exe.write_text(
        FAKE_JOURNALCTL.format(
            python=sys.executable, data=str(JOURNAL), argv_log=str(argv_log), start_at=start_at
        )
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, argv_log


def collect(reader: JournalReader, n: int) -> list[object]:
    out: list[object] = []
    events = reader.events()
    for ev in events:
        out.append(ev)
        if len(out) == n:
            reader.commit()
            break
    events.close()  # ends the journalctl process
    return out


def test_live_journal_through_journalctl_resumes_after_the_cursor(tmp_path: Path) -> None:
    exe, argv_log = make_journalctl(tmp_path)
    store = JsonCheckpointStore(tmp_path / "cp.json")
    with JOURNAL.open("rb") as fh:
        want = list(parse_journal(fh))
    # first run: start from the beginning of our recorded journal, stop after 50 events
    r1 = JournalReader(store=store, journalctl=str(exe), prefer_native=False)
    first = collect(r1, 50)
    assert first == want[:50]
    # restart: the fake journalctl is asked for --after-cursor and the rest follows, once
    r2 = JournalReader(store=store, journalctl=str(exe), prefer_native=False)
    assert r2.cursor and any(a.startswith("--after-cursor=") for a in r2.command())
    rest = collect(r2, len(want) - 50)
    assert first + rest == want
    calls = argv_log.read_text().splitlines()
    assert "--lines=0" in calls[0] and "--after-cursor=" in calls[1]
    assert all("--output=json" in c and "--follow" in c for c in calls)


def test_journalctl_process_is_ended_when_stopped(tmp_path: Path) -> None:
    exe, _ = make_journalctl(tmp_path)
    r = JournalReader(journalctl=str(exe), prefer_native=False)
    stop = threading.Event()
    it = r.records(stop)
    next(it)
    proc = r._proc
    assert proc is not None and proc.poll() is None
    stop.set()
    list(it)  # drains and returns once the process is terminated
    assert proc.poll() is not None
    assert not os.path.exists(f"/proc/{proc.pid}/status") or proc.returncode is not None
