"""Reliability of ``mailwarden run`` as a real subprocess following a log a test appends to:

* killed with SIGKILL mid-stream (twice), it restarts from the checkpoints in the store, and the
  store ends up exactly as a one-shot ``mailwarden analyze`` of the same log makes it: no
  message, attempt, rollup count or SASL failure lost or counted twice;
* SIGTERM: it commits what it read, checkpoints the end of the log, exits 0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mailwarden.config import Settings
from mailwarden.service.daemon import host_id
from service.helpers import (
    DaemonProc,
    checkpoint_offset,
    daemon_on,
    same_as_one_shot,
    sasl_rows,
    wait_for,
)

pytestmark = [pytest.mark.slow]


def _append(path: Path, lines: list[bytes], pause: float = 0.0, step: int = 40) -> None:
    with path.open("ab") as f:
        for i in range(0, len(lines), step):
            f.write(b"".join(lines[i : i + step]))
            f.flush()
            if pause:
                time.sleep(pause)


def _starts(d: DaemonProc) -> int:
    return sum(1 for e in d.events() if e.get("msg") == "following the log")


def _breaker_hits(url: str) -> list[tuple[float, str, str]]:
    from sqlalchemy import select

    from mailwarden.store.breaker import breaker_hits as t
    from mailwarden.store.db import open_engine

    e = open_engine(url)
    try:
        with e.connect() as c:
            return [tuple(r) for r in c.execute(select(t.c.ts, t.c.provider, t.c.rule))]
    finally:
        e.dispose()


def _health(url: str) -> dict[str, Any] | None:
    from mailwarden.store.db import open_engine
    from mailwarden.store.service import get_state

    e = open_engine(url)
    try:
        return get_state(e, host_id(Settings()), "health")
    finally:
        e.dispose()


def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    lines, full, log, url, d = daemon_on(tmp_path, 6000, seed=11, head=1500)
    try:
        d.start()
        wait_for(lambda: checkpoint_offset(url, str(log)) > 0, 60, "first commit")
        # keep writing while it reads; kill it in the middle of a stream of appends
        _append(log, lines[1500:3000], pause=0.01)
        d.kill9()
        killed_at = checkpoint_offset(url, str(log))
        assert 0 < killed_at < log.stat().st_size  # it was in the middle of the stream
        _append(log, lines[3000:4000])  # written while it is down
        d.start()
        wait_for(lambda: _starts(d) == 2, 60, "second start")
        _append(log, lines[4000:4500], pause=0.005)
        d.kill9()  # a second time, shortly after a restart
        d.start()
        _append(log, lines[4500:], pause=0.005)
        size = log.stat().st_size
        wait_for(lambda: checkpoint_offset(url, str(log)) == size, 90, "end of the log committed")
        assert d.term() == 0
    finally:
        d.stop()
    assert log.read_bytes() == full.read_bytes()

    got, want = same_as_one_shot(full, url, d.env, tmp_path / "oneshot.db")
    assert len(want["messages"]) > 500 and len(want["attempts"]) > 500  # a real workload
    assert len(got["sasl"]) == sasl_rows(full) > 0
    # the breaker saw the re-read lines again: none of its rule hits is counted twice
    hits = _breaker_hits(url)
    assert hits and len(hits) == len(set(hits))
    events = d.events()
    starts = [e for e in events if e.get("msg") == "following the log"]
    assert len(starts) == 3 and starts[1]["restored_messages"] > 0


def test_sigterm_commits_everything_and_exits_zero(tmp_path: Path) -> None:
    # after the first commit, only the shutdown commits
    lines, full, log, url, d = daemon_on(
        tmp_path, 800, seed=3, head=300, service={"commit_interval": 30}
    )
    try:
        d.start()
        wait_for(lambda: checkpoint_offset(url, str(log)) > 0, 60, "first commit")
        _append(log, lines[300:])
        time.sleep(1.0)
        wait_for(lambda: _health(url) is not None, 30, "a heartbeat")
        h = _health(url)
        assert h is not None and h["components"]["log"]["alive"] and h["pid"] == d.proc.pid  # type: ignore[union-attr]
        assert 0 < checkpoint_offset(url, str(log)) < log.stat().st_size
        assert d.term() == 0
    finally:
        d.stop()
    assert checkpoint_offset(url, str(log)) == log.stat().st_size
    same_as_one_shot(full, url, d.env, tmp_path / "oneshot.db", tables=("attempts", "messages"))
    stopped = [e for e in d.events() if e.get("msg") == "stopped"]
    assert stopped and stopped[0]["lines"] == len(lines)
    # every line on stderr is one JSON event with the documented keys
    for e in d.events():
        assert {"ts", "level", "logger", "msg"} <= set(e), e


def test_log_rotated_while_the_daemon_was_down(tmp_path: Path) -> None:
    lines, full, log, url, d = daemon_on(tmp_path, 3000, seed=17, head=1000)
    try:
        d.start()
        wait_for(lambda: checkpoint_offset(url, str(log)) == log.stat().st_size, 60, "part 1")
        _append(log, lines[1000:1800], pause=0.005)
        d.kill9()
        # logrotate while it is down: the old file gets more lines, is renamed, a new one starts
        _append(log, lines[1800:2000])
        log.rename(tmp_path / "mail.log.1")
        log.write_bytes(b"".join(lines[2000:2500]))
        d.start()
        _append(log, lines[2500:], pause=0.005)
        size = log.stat().st_size
        wait_for(lambda: checkpoint_offset(url, str(log)) == size, 90, "new file read")
        assert d.term() == 0
    finally:
        d.stop()
    same_as_one_shot(full, url, d.env, tmp_path / "oneshot.db")
