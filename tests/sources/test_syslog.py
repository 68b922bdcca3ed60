"""Syslog envelopes: both stamp forms, year inference, time zones, and hostile input."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.events import LogLine, Unparsed
from mailwarden.sources.stats import ParseStats
from mailwarden.sources.syslog import MAX_LINE, Envelope, split_line

from .conftest import utc_env


def ts(*args: int, tz: str = "UTC") -> float:
    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()  # type: ignore[misc]


def test_traditional_line(env: Envelope) -> None:
    ll = split_line(
        b"Nov 27 17:19:54 mail postfix/smtp[11683]: 394D3162231: to=<a@b>\n", env, offset=7
    )
    assert isinstance(ll, LogLine)
    assert ll.ts == ts(2026, 11, 27, 17, 19, 54)
    assert (ll.host, ll.program, ll.pid) == ("mail", "postfix/smtp", 11683)
    assert ll.message == "394D3162231: to=<a@b>"
    assert (ll.source, ll.offset) == ("test", 7)


def test_single_digit_day_and_local_zone() -> None:
    env = Envelope(tz=ZoneInfo("Europe/Zurich"), reference=ts(2026, 8, 1))
    ll = split_line(b"Jul  5 09:00:00 mail postfix/qmgr[1]: x", env)
    assert isinstance(ll, LogLine)
    assert ll.ts == ts(2026, 7, 5, 9, 0, 0, tz="Europe/Zurich")
    assert ll.ts == ts(2026, 7, 5, 7, 0, 0)  # CEST = UTC+2


def test_year_from_reference_goes_back_when_stamp_would_be_in_the_future() -> None:
    env = utc_env(reference=ts(2027, 1, 5))
    ll = split_line(b"Dec 31 23:59:59 mail postfix/qmgr[1]: x", env)
    assert isinstance(ll, LogLine) and ll.ts == ts(2026, 12, 31, 23, 59, 59)


def test_new_year_wrap_inside_one_file() -> None:
    env = utc_env(reference=ts(2027, 1, 1, 0, 5))
    lines = [
        b"Dec 31 23:59:58 mail postfix/qmgr[1]: a",
        b"Jan  1 00:00:01 mail postfix/qmgr[1]: b",
        b"Dec 31 23:59:59 mail postfix/qmgr[1]: late line from the old year",
        b"Jan  1 00:00:02 mail postfix/qmgr[1]: c",
    ]
    got = [split_line(x, env).ts for x in lines]  # type: ignore[union-attr]
    assert got == [
        ts(2026, 12, 31, 23, 59, 58),
        ts(2027, 1, 1, 0, 0, 1),
        ts(2026, 12, 31, 23, 59, 59),
        ts(2027, 1, 1, 0, 0, 2),
    ]


def test_file_spanning_a_year_with_mtime_reference() -> None:
    # mtime in February 2026, first line in March 2025: a year-long file
    env = utc_env(reference=ts(2026, 2, 10))
    months = [b"Mar", b"Jun", b"Sep", b"Dec", b"Jan", b"Feb"]
    got = [
        split_line(m + b" 10 12:00:00 mail postfix/qmgr[1]: x", env).ts  # type: ignore[union-attr]
        for m in months
    ]
    want = [
        ts(2025, 3, 10, 12),
        ts(2025, 6, 10, 12),
        ts(2025, 9, 10, 12),
        ts(2025, 12, 10, 12),
        ts(2026, 1, 10, 12),
        ts(2026, 2, 10, 12),
    ]
    assert got == want


@pytest.mark.parametrize(
    ("stamp", "want"),
    [
        (b"2026-11-27T17:31:17.507827+00:00", ts(2026, 11, 27, 17, 31, 17) + 0.507827),
        (b"2026-11-27T17:31:17+01:00", ts(2026, 11, 27, 16, 31, 17)),
        (b"2026-11-27T17:31:17.5-05:30", ts(2026, 11, 27, 23, 1, 17) + 0.5),
        (b"2026-11-27T17:31:17.123Z", ts(2026, 11, 27, 17, 31, 17) + 0.123),
    ],
)
def test_rfc3339_any_offset(stamp: bytes, want: float) -> None:
    ll = split_line(stamp + b" vm.example.test postfix-bulk/smtp[24296]: hi", utc_env())
    assert isinstance(ll, LogLine)
    assert ll.ts == pytest.approx(want, abs=1e-6)
    assert (ll.host, ll.program) == ("vm.example.test", "postfix-bulk/smtp")


def test_program_with_several_parts() -> None:
    ll = split_line(b"Nov 27 17:22:24 mail postfix/suspended/smtp[15261]: x", utc_env())
    assert isinstance(ll, LogLine) and ll.program == "postfix/suspended/smtp"
    ll = split_line(b"Nov 27 17:22:24 mail dovecot: imap-login: x", utc_env())
    assert isinstance(ll, LogLine) and (ll.program, ll.pid) == ("dovecot", None)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x00\x01\x02binary\xff junk", "binary"),
        (b"Nov 27 17:19:54 mail postfix/smtp[1]: " + b"x" * (MAX_LINE + 1), "too long"),
        (b"Nov 27 17:1", "bad timestamp"),
        (b"Nov 31 17:19:54 mail postfix/smtp[1]: x", "bad timestamp"),
        (b"Nov 27 25:19:54 mail postfix/smtp[1]: x", "bad timestamp"),
        (b"2026-13-27T17:31:17+00:00 vm postfix/smtp[1]: x", "bad timestamp"),
        (b"2026-11-27T17:31:17+99:00 vm postfix/smtp[1]: x", "bad timestamp"),
        (b"\n", "empty"),
        (b"Nov 27 17:19:54 mail", "not syslog"),
        (b"Nov 27 17:19:54 mail postfix/smtp[x1]: y", "no program tag"),
    ],
)
def test_bad_lines_become_unparsed_with_a_reason(raw: bytes, why: str) -> None:
    stats = ParseStats()
    out = split_line(raw, utc_env(), offset=3, stats=stats)
    assert isinstance(out, Unparsed)
    assert out.why == why and out.offset == 3
    assert len(out.line) <= 2000
    assert stats.unparsed == 1 and stats.why[why] == 1 and stats.samples == [out]


def test_non_utf8_is_replaced_not_fatal() -> None:
    ll = split_line(b"Nov 27 17:19:54 mail postfix/smtp[1]: caf\xe9 \xff", utc_env())
    assert isinstance(ll, LogLine) and ll.message == "caf\ufffd \ufffd"


def test_samples_are_bounded() -> None:
    stats = ParseStats(max_samples=3)
    env = utc_env()
    for _ in range(10):
        split_line(b"garbage", env, stats=stats)
    assert stats.unparsed == 10 and len(stats.samples) == 3


_host = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,3}\Z")
_prog = st.from_regex(r"\A(postfix|postfix-[a-z]{1,8})(/[a-z-]{1,12}){1,3}\Z")
_msg = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=200
)


@given(
    when=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)
    ),
    host=_host,
    prog=_prog,
    pid=st.integers(1, 4_000_000),
    msg=_msg,
    iso=st.booleans(),
)
def test_property_well_formed_lines_round_trip(
    when: datetime, host: str, prog: str, pid: int, msg: str, iso: bool
) -> None:
    when = when.replace(microsecond=0 if not iso else when.microsecond)
    stamp = when.isoformat() if iso else f"{when:%b} {when.day:2d} {when:%H:%M:%S}"
    raw = f"{stamp} {host} {prog}[{pid}]: {msg}\n".encode()
    env = utc_env(reference=when.timestamp())
    ll = split_line(raw, env)
    assert isinstance(ll, LogLine), ll
    assert ll.ts == pytest.approx(when.timestamp(), abs=1e-6)
    assert (ll.host, ll.program, ll.pid, ll.message) == (host, prog, pid, msg)


@given(st.binary(max_size=400))
def test_property_arbitrary_bytes_never_raise(raw: bytes) -> None:
    stats = ParseStats()
    out = split_line(raw, utc_env(), stats=stats)
    assert isinstance(out, LogLine | Unparsed)
    assert stats.total == 1


def test_repeated_hour_when_summer_time_ends() -> None:
    # Europe/Zurich leaves CEST on 2026-10-25 at 03:00 local: 02:00-02:59 happens twice
    env = Envelope(tz=ZoneInfo("Europe/Zurich"), reference=ts(2026, 10, 26))
    stamps = [b"Oct 25 01:59:59", b"Oct 25 02:00:00", b"Oct 25 02:59:59", b"Oct 25 02:00:00",
              b"Oct 25 02:30:00", b"Oct 25 03:00:00"]  # fmt: skip
    got = [split_line(p + b" mail postfix/qmgr[1]: x", env).ts for p in stamps]  # type: ignore[union-attr]
    want = [ts(2026, 10, 24, 23, 59, 59), ts(2026, 10, 25, 0, 0, 0),
            ts(2026, 10, 25, 0, 59, 59), ts(2026, 10, 25, 1, 0, 0),
            ts(2026, 10, 25, 1, 30, 0), ts(2026, 10, 25, 2, 0, 0)]  # fmt: skip
    assert got == want


def test_host_zone_is_used_without_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as _time

    monkeypatch.setenv("TZ", "America/New_York")
    _time.tzset()
    try:
        env = Envelope(reference=ts(2026, 12, 1))
        ll = split_line(b"Nov 27 12:00:00 mail postfix/qmgr[1]: x", env)
        assert isinstance(ll, LogLine) and ll.ts == ts(2026, 11, 27, 17, 0, 0)
    finally:
        monkeypatch.undo()
        _time.tzset()
