"""--follow on real files: growth, half-written lines, rename rotation, copytruncate, and
restarts from a saved checkpoint, with nothing lost and nothing read twice."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from mailwarden.sources.follow import (
    Checkpoint,
    Chunk,
    Follower,
    JsonCheckpointStore,
    MemoryCheckpointStore,
)


def lines_of(chunks: list[Chunk]) -> list[bytes]:
    return [ln for c in chunks for ln in c.lines]


def append(p: Path, data: bytes) -> None:
    with p.open("ab") as fh:
        fh.write(data)


def numbered(prefix: str, a: int, b: int) -> bytes:
    return b"".join(f"{prefix} line {i}\n".encode() for i in range(a, b))


def test_growth_and_half_written_lines(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"one\ntwo\nthr")
    f = Follower(log, from_start=True)
    assert lines_of(f.poll()) == [b"one\n", b"two\n"]
    assert f.poll() == []
    append(log, b"ee\nfo")
    assert lines_of(f.poll()) == [b"three\n"]
    append(log, b"ur\n")
    (chunk,) = f.poll()
    assert chunk.lines == [b"four\n"] and chunk.offset == len(b"one\ntwo\nthree\n")
    cp = f.checkpoint()
    assert cp is not None and cp.offset == log.stat().st_size and cp.inode == log.stat().st_ino


def test_without_checkpoint_starts_at_the_end_but_keeps_a_partial_last_line(
    tmp_path: Path,
) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"old\nhalf")
    f = Follower(log)
    assert f.poll() == []
    append(log, b"-done\nnew\n")
    assert lines_of(f.poll()) == [b"half-done\n", b"new\n"]


def test_rename_rotation_with_a_late_writer(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(numbered("a", 0, 5))
    f = Follower(log, from_start=True, grace=60)
    assert lines_of(f.poll()) == numbered("a", 0, 5).splitlines(keepends=True)
    append(log, numbered("a", 5, 8))  # written, not yet read, when logrotate runs
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(numbered("b", 0, 3))
    append(tmp_path / "mail.log.1", b"a late line\n")  # the writer had not reopened yet
    got = lines_of(f.poll())
    assert got == [*numbered("a", 5, 8).splitlines(keepends=True), b"a late line\n",
                   *numbered("b", 0, 3).splitlines(keepends=True)]  # fmt: skip
    assert f.rotations == 1
    append(tmp_path / "mail.log.1", b"later still\n")  # within the grace period
    append(log, b"b line 3\n")
    assert lines_of(f.poll()) == [b"later still\n", b"b line 3\n"]
    f.close()


def test_rotated_file_is_released_after_grace_with_its_unterminated_rest(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"x1\nx2-unterminated")
    f = Follower(log, from_start=True, grace=0)
    assert lines_of(f.poll()) == [b"x1\n"]
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(b"y1\n")
    assert lines_of(f.poll()) == [b"y1\n"]
    assert lines_of(f.poll()) == [b"x2-unterminated"]  # grace over: nothing is dropped
    assert lines_of(f.poll()) == []


def test_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(numbered("a", 0, 10))
    f = Follower(log, from_start=True)
    assert len(lines_of(f.poll())) == 10
    shutil.copyfile(log, tmp_path / "mail.log.1")
    with log.open("r+b") as fh:
        fh.truncate(0)
    append(log, numbered("b", 0, 2))
    assert lines_of(f.poll()) == numbered("b", 0, 2).splitlines(keepends=True)
    assert f.truncations == 1


def test_copytruncate_that_regrew_past_the_old_offset_is_seen_by_its_first_line(
    tmp_path: Path,
) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(numbered("a", 0, 3))
    f = Follower(log, from_start=True)
    f.poll()
    with log.open("r+b") as fh:
        fh.truncate(0)
    append(log, numbered("bbbbbbbbbb", 0, 6))  # longer than before the truncation
    assert lines_of(f.poll()) == numbered("bbbbbbbbbb", 0, 6).splitlines(keepends=True)


def test_restart_from_checkpoint_reads_only_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    store = JsonCheckpointStore(tmp_path / "state" / "follow.json")
    log.write_bytes(numbered("a", 0, 4) + b"partial")
    f = Follower(log, store=store, from_start=True)
    assert len(lines_of(f.poll())) == 4
    f.commit()
    f.close()
    append(log, b" now complete\n" + numbered("a", 4, 6))
    f2 = Follower(log, store=JsonCheckpointStore(tmp_path / "state" / "follow.json"))
    assert lines_of(f2.poll()) == [b"partial now complete\n",
                                   *numbered("a", 4, 6).splitlines(keepends=True)]  # fmt: skip


def test_uncommitted_lines_are_read_again_after_a_crash(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    store = MemoryCheckpointStore()
    log.write_bytes(numbered("a", 0, 2))
    f = Follower(log, store=store, from_start=True)
    f.poll()
    f.commit()
    append(log, numbered("a", 2, 4))
    assert len(lines_of(f.poll())) == 2  # handed out, but the process dies before commit
    f2 = Follower(log, store=store)
    assert lines_of(f2.poll()) == numbered("a", 2, 4).splitlines(keepends=True)


def test_restart_after_rotation_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    store = JsonCheckpointStore(tmp_path / "cp.json")
    log.write_bytes(numbered("a", 0, 3))
    f = Follower(log, store=store, from_start=True)
    f.poll()
    f.commit()
    f.close()
    append(log, numbered("a", 3, 5))  # written after our last commit
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(numbered("b", 0, 2))
    f2 = Follower(log, store=store, grace=0)
    got = lines_of(f2.poll()) + lines_of(f2.poll())
    assert got == [*numbered("a", 3, 5).splitlines(keepends=True),
                   *numbered("b", 0, 2).splitlines(keepends=True)]  # fmt: skip
    assert f2.gaps == []


def test_restart_while_draining_a_rotated_file_resumes_both(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    store = JsonCheckpointStore(tmp_path / "cp.json")
    log.write_bytes(numbered("a", 0, 2))
    f = Follower(log, store=store, from_start=True, grace=60)
    f.poll()
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(numbered("b", 0, 2))
    f.poll()
    f.commit()
    cp = store.load(str(log))
    assert cp is not None and len(cp.rotated) == 1
    f.close()
    append(tmp_path / "mail.log.1", b"a late\n")
    append(log, b"b late\n")
    f2 = Follower(log, store=store, grace=60)
    assert lines_of(f2.poll()) == [b"a late\n", b"b late\n"]


def test_rotated_file_gone_while_stopped_is_a_reported_gap(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    store = MemoryCheckpointStore()
    log.write_bytes(numbered("a", 0, 2))
    f = Follower(log, store=store, from_start=True)
    f.poll()
    f.commit()
    log.rename(tmp_path / "gone")
    os.unlink(tmp_path / "gone")
    log.write_bytes(numbered("b", 0, 1))
    f2 = Follower(log, store=store)
    assert lines_of(f2.poll()) == [b"b line 0\n"]
    assert len(f2.gaps) == 1 and "gone" in f2.gaps[0]


def test_checkpoint_store_is_pluggable(tmp_path: Path) -> None:
    class ListStore:
        def __init__(self) -> None:
            self.saved: list[Checkpoint] = []

        def load(self, path: str) -> Checkpoint | None:
            return next((c for c in reversed(self.saved) if c.path == path), None)

        def save(self, checkpoint: Checkpoint) -> None:
            self.saved.append(checkpoint)

    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n")
    store = ListStore()
    f = Follower(log, store=store, from_start=True)
    f.poll()
    f.commit()
    assert store.saved[-1].offset == 2
    append(log, b"2\n")
    assert lines_of(Follower(log, store=store).poll()) == [b"2\n"]


def test_json_store_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    store = JsonCheckpointStore(tmp_path / "cp.json")
    cp = Checkpoint("/var/log/mail.log", 12, 345, "ab" * 32, 1.5, ((7, 8, "cd"),))
    store.save(cp)
    store.save(Checkpoint("/var/log/other.log", 1, 2, "", 0.0))
    assert store.load("/var/log/mail.log") == cp
    assert store.load("/nope") is None
    (tmp_path / "cp.json").write_text("{not json")
    try:
        store.load("/var/log/mail.log")
    except Exception as exc:  # SourceError names the file
        assert "cp.json" in str(exc)
    else:
        raise AssertionError("corrupt checkpoint file must be an error")


def test_live_follow_with_rotations_loses_nothing(tmp_path: Path) -> None:
    """A writer thread writes 3000 lines in pieces and rotates twice; the reader gets them all,
    once each, in order within each file."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    store = JsonCheckpointStore(tmp_path / "cp.json")
    stop = threading.Event()
    got: list[bytes] = []

    def writer() -> None:
        for i in range(3000):
            line = f"msg {i:05d} {'x' * (i % 50)}\n".encode()
            # half lines: write in two pieces
            append(log, line[:7])
            append(log, line[7:])
            if i in (1000, 2000):
                log.rename(tmp_path / f"mail.log.{i}")
                log.write_bytes(b"")
            if i % 200 == 0:
                time.sleep(0.01)
        time.sleep(0.3)
        stop.set()

    f = Follower(log, store=store, from_start=True, interval=0.005, grace=0.05)
    t = threading.Thread(target=writer)
    t.start()
    for chunk in f.follow(stop):
        got.extend(chunk.lines)
    t.join()
    f.close()
    for c in Follower(log, store=store, grace=0).poll():  # whatever came after the stop
        got.extend(c.lines)
    want = [f"msg {i:05d} {'x' * (i % 50)}\n".encode() for i in range(3000)]
    # every line exactly once, in order (the writer never writes to a rotated file here)
    assert got == want
    assert f.rotations == 2


def test_follow_events_across_rotation_and_restart_equals_parsing_it_all(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from mailwarden.sources.follow import follow_events
    from mailwarden.sources.postfix import parse_lines

    from .conftest import SAMPLE_LOG, utc_env

    lines = SAMPLE_LOG.read_bytes().splitlines(keepends=True)
    want = list(parse_lines(lines, env=utc_env()))
    log = tmp_path / "mail.log"
    store = JsonCheckpointStore(tmp_path / "cp.json")
    got: list[object] = []

    def run(n_expected: int) -> None:
        stop = threading.Event()
        f = Follower(log, store=store, from_start=True, interval=0.01, grace=0)
        for ev in follow_events(f, tz=ZoneInfo("UTC"), stop=stop):
            got.append(ev)
            if len(got) == n_expected:
                stop.set()
        f.close()

    log.write_bytes(b"".join(lines[:80]) + lines[80][:20])  # a half-written line at the end
    n80 = len(list(parse_lines(lines[:80], env=utc_env())))
    run(n80)
    # more lines, a rotation and more lines while we are stopped, then a restart
    append(log, lines[80][20:] + b"".join(lines[81:120]))
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(b"".join(lines[120:]))
    run(len(want))
    assert got == want
