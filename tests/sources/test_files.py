"""Rotated, compressed log files: oldest first by content, offsets, damaged archives."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailwarden.errors import SourceError
from mailwarden.events import LogLine
from mailwarden.sources.files import LogFile, order_files, parse_files, read_lines
from mailwarden.sources.postfix import parse_lines
from mailwarden.sources.stats import ParseStats

from .conftest import SAMPLE_LOG, utc_env

UTC_TZ = ZoneInfo("UTC")


def _set_mtime(p: Path, when: datetime) -> None:
    t = when.timestamp()
    os.utime(p, (t, t))


def rotated_set(tmp_path: Path) -> tuple[list[Path], list[bytes]]:
    """The sample log split in four rotated files, compressed three ways, names that lie."""
    lines = SAMPLE_LOG.read_bytes().splitlines(keepends=True)
    q = len(lines) // 4
    chunks = [lines[:q], lines[q : 2 * q], lines[2 * q : 3 * q], lines[3 * q :]]
    # oldest chunk in the "newest" name, and every kind of compression
    writers = [
        ("z-current.log", lambda b: b),
        ("mail.log.1.gz", gzip.compress),
        ("mail.log.2.bz2", bz2.compress),
        ("a.log", lzma.compress),
    ]
    paths = []
    for i, (chunk, (name, comp)) in enumerate(zip(chunks, writers, strict=True)):
        p = tmp_path / name
        p.write_bytes(comp(b"".join(chunk)))
        _set_mtime(p, datetime(2026, 11, 27, 18, i, tzinfo=UTC))
        paths.append(p)
    return paths, lines


def test_files_are_read_oldest_first_whatever_their_names(tmp_path: Path) -> None:
    paths, lines = rotated_set(tmp_path)
    shuffled = paths[:]
    random.Random(3).shuffle(shuffled)
    ordered = order_files(shuffled, tz=UTC_TZ)
    assert [lf.path for lf in ordered] == paths
    assert [lf.compression for lf in ordered] == ["plain", "gzip", "bzip2", "xz"]
    got = [raw for _lf, _off, raw in read_lines(reversed(paths), tz=UTC_TZ)]
    assert got == lines


def test_offsets_are_exact_per_file(tmp_path: Path) -> None:
    paths, _ = rotated_set(tmp_path)
    for lf, off, raw in read_lines(paths, tz=UTC_TZ):
        with lf.open() as fh:
            fh.seek(off) if lf.compression == "plain" else fh.read(off)
            assert fh.readline() == raw


def test_parse_files_equals_parsing_the_whole_log(tmp_path: Path) -> None:
    paths, _ = rotated_set(tmp_path)
    # every file's year comes from its own mtime (Nov 2026) and the zone from tz
    stats = ParseStats()
    events = list(parse_files(paths[::-1], tz=UTC_TZ, stats=stats))
    with SAMPLE_LOG.open("rb") as fh:
        want = list(parse_lines(fh, env=utc_env()))
    assert events == want
    assert stats.total == len(SAMPLE_LOG.read_bytes().splitlines()) and stats.unparsed == 0


def test_corrupt_gzip_is_reported_with_file_and_offset_and_others_go_on(tmp_path: Path) -> None:
    paths, lines = rotated_set(tmp_path)
    big = b"".join(lines) * 50
    bad = tmp_path / "mail.log.1.gz"
    data = bytearray(gzip.compress(big))
    half = len(data) // 2
    data[half : half + 64] = b"\x00" * 64  # damage in the middle of the deflate stream
    bad.write_bytes(bytes(data))
    _set_mtime(bad, datetime(2026, 11, 27, 18, 1, tzinfo=UTC))
    stats = ParseStats()
    got = list(read_lines(paths, tz=UTC_TZ, stats=stats))
    assert stats.errors_total == 1
    (msg,) = stats.errors
    assert str(bad) in msg and "gzip" in msg
    offset = int(msg.split(" at offset ")[1].split(":")[0])
    from_bad = [raw for lf, _o, raw in got if lf.path == bad]
    assert 0 < offset == sum(len(r) for r in from_bad) < len(big)
    # deflate may turn damaged bytes into wrong text before the CRC check fails; the data
    # well before the damage is intact
    assert b"".join(from_bad)[:10_000] == big[:10_000]
    # the three healthy files are complete
    for p in (paths[0], paths[2], paths[3]):
        assert any(lf.path == p for lf, _o, _r in got)
    assert sum(1 for lf, _o, _r in got if lf.path == paths[3]) == len(lines) - 3 * (len(lines) // 4)


def test_gzip_cut_short_keeps_every_complete_line_before_the_cut(tmp_path: Path) -> None:
    big = SAMPLE_LOG.read_bytes() * 20
    p = tmp_path / "mail.log.3.gz"
    data = gzip.compress(big)
    p.write_bytes(data[: len(data) * 2 // 3])
    errors: list[SourceError] = []
    got = b"".join(LogFile.of(p).lines(errors.append))
    (err,) = errors
    assert err.source == str(p) and err.offset == len(got) > 0
    assert big.startswith(got)


def test_truncated_xz_and_missing_file_are_errors_not_exceptions(tmp_path: Path) -> None:
    paths, _ = rotated_set(tmp_path)
    cut = paths[3]
    cut.write_bytes(cut.read_bytes()[:-20])
    errors: list[SourceError] = []
    got = list(read_lines([*paths, tmp_path / "nope.log"], tz=UTC_TZ, on_error=errors.append))
    assert len(errors) == 2
    assert {e.source for e in errors} == {str(cut), str(tmp_path / "nope.log")}
    assert any(lf.path == paths[0] for lf, _o, _r in got)


def test_without_handler_errors_raise_source_error(tmp_path: Path) -> None:
    p = tmp_path / "broken.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(SourceError, match=r"broken\.gz at offset 0"):
        list(LogFile.of(p).lines())


def test_year_boundary_across_rotated_files(tmp_path: Path) -> None:
    old = tmp_path / "mail.log.1"
    old.write_bytes(
        b"Dec 31 23:59:58 mail postfix/qmgr[1]: AAAAAA1: removed\n"
        b"Jan  1 00:00:01 mail postfix/qmgr[1]: AAAAAA2: removed\n"
    )
    _set_mtime(old, datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC))
    new = tmp_path / "mail.log"
    new.write_bytes(b"Jan  1 00:10:00 mail postfix/qmgr[1]: AAAAAA3: removed\n")
    _set_mtime(new, datetime(2027, 1, 1, 0, 10, tzinfo=UTC))
    evs = list(parse_files([new, old], tz=UTC_TZ))
    assert [e.qid for e in evs] == ["AAAAAA1", "AAAAAA2", "AAAAAA3"]  # type: ignore[union-attr]
    assert [datetime.fromtimestamp(e.ts, UTC).year for e in evs] == [2026, 2027, 2027]  # type: ignore[union-attr]


def test_log_line_sources_name_the_file(tmp_path: Path) -> None:
    paths, _ = rotated_set(tmp_path)
    lf = LogFile.of(paths[1])
    env = lf.envelope(UTC_TZ)
    raw = next(iter(lf.lines()))
    from mailwarden.sources.syslog import split_line

    ll = split_line(raw, env, offset=0)
    assert isinstance(ll, LogLine) and ll.source == str(paths[1])


def test_a_year_long_plain_file_gets_its_years_from_its_last_line(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    stamps = [b"Feb  5 10:00:00", b"Jun  1 10:00:00", b"Dec 31 23:59:59", b"Jan  1 00:00:00",
              b"Feb  3 10:00:00"]  # fmt: skip
    log.write_bytes(b"".join(s + b" mail postfix/qmgr[1]: AAAAAA%d: removed\n" % i
                             for i, s in enumerate(stamps)))  # fmt: skip
    # written to later than its last line (e.g. copied): the first line's day of the year is
    # before the mtime's, so only the last line tells that the file started a year earlier
    _set_mtime(log, datetime(2026, 2, 20, tzinfo=UTC))
    assert LogFile.of(log).last_stamp() == b"Feb  3 10:00:00"
    evs = list(parse_files([log], tz=UTC_TZ))
    assert [datetime.fromtimestamp(e.ts, UTC).year for e in evs] == [  # type: ignore[union-attr]
        2025,
        2025,
        2025,
        2026,
        2026,
    ]


def test_last_stamp_skips_a_partial_or_foreign_tail(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"Nov 27 17:19:54 mail postfix/qmgr[1]: AAAAAA1: removed\ngarbage\nNov 2")
    assert LogFile.of(log).last_stamp() == b"Nov 27 17:19:54"
    (tmp_path / "empty.log").write_bytes(b"")
    assert LogFile.of(tmp_path / "empty.log").last_stamp() is None
