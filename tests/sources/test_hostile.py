"""Hostile and damaged input through the whole line pipeline: counted, sampled, never fatal."""

from __future__ import annotations

from mailwarden.events import Delivery, Removed, Unparsed
from mailwarden.sources.correlate import correlate_lines
from mailwarden.sources.postfix import parse_lines
from mailwarden.sources.stats import ParseStats

from .conftest import SAMPLE_LOG, utc_env

GOOD = b"Nov 27 17:19:54 mail postfix/qmgr[10915]: 394D3162231: removed\n"


def test_junk_between_good_lines() -> None:
    lines = [
        GOOD,
        b"\x00\x01\x02\x03binary\xff\xfe\n",
        b"Nov 27 17:19:54 mail postfix/smtp[1]: " + b"A" * (1 << 20) + b"\n",  # 1 MB line
        b"\n",
        b"Nov 27 17:19:54 mail postfix/smtp[11683]: 394D3162232: to=<a@b>, relay=x[1.2.3.4]:25,\n",
        b"Nov 27 17:19:54 mail postfix/cleanup[1]: 394D3162233: message-id=<caf\xe9@x>\n",
        b"Nov 27 17:19:54 mail kernel: [12.3] eth0 link up\n",
        b"Nov 27 17:19:50 mail postfix/qmgr[10915]: 394D3162234: removed\n",  # 4 s back
        b"Nov 27 17:19:54 mail postfix/qmgr[10915]: 394D3162235: remo",  # cut, no newline
    ]
    stats = ParseStats()
    out = list(parse_lines(lines, env=utc_env(), stats=stats, start_offset=0, yield_unparsed=True))
    whys = {u.why: u for u in out if isinstance(u, Unparsed)}
    assert set(whys) == {"binary", "too long", "empty", "unknown postfix line", "truncated"}
    assert whys["too long"].offset == len(GOOD) + len(lines[1])
    assert len(whys["too long"].line) <= 2000
    assert whys["truncated"].offset == sum(map(len, lines[:-1]))
    mids = [e for e in out if e.__class__.__name__ == "MessageIdSeen"]
    assert [m.message_id for m in mids] == ["caf\ufffd@x"]  # type: ignore[attr-defined]
    assert [e.qid for e in out if isinstance(e, Removed)] == ["394D3162231", "394D3162234"]
    assert stats.foreign == 1 and stats.programs["kernel"] == 1
    assert stats.out_of_order == 1
    assert stats.total == len(lines)
    assert stats.total == stats.parsed + stats.ignored + stats.unparsed + stats.foreign


def test_sample_with_every_line_cut_in_half_never_raises() -> None:
    lines = [ln[: len(ln) // 2] + b"\n" for ln in SAMPLE_LOG.read_bytes().splitlines()]
    for run in (parse_lines, correlate_lines):
        stats = ParseStats(max_samples=5)
        list(run(lines, env=utc_env(), stats=stats))  # type: ignore[operator]
        assert stats.total == len(lines)
        assert stats.unparsed > 0 and len(stats.samples) == 5
        assert stats.total == stats.parsed + stats.ignored + stats.unparsed + stats.foreign


def test_status_line_with_unknown_extra_field_still_parses() -> None:
    line = (
        b"Nov 27 17:19:54 mail postfix/smtp[11683]: 394D3162231: to=<a@b.test>, "
        b"relay=mx.b.test[192.0.2.1]:25, conn_use=3, delay=0.5, delays=0.1/0/0.2/0.2, "
        b"tls=TLSv1.3, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n"
    )
    (d,) = list(parse_lines([line], env=utc_env()))
    assert isinstance(d, Delivery)
    assert (d.recipient, d.relay_host, d.conn_use, d.delay, d.dsn, d.status) == (
        "a@b.test",
        "mx.b.test",
        3,
        0.5,
        "2.0.0",
        "sent",
    )
    assert d.reply is not None and d.reply.code == 250


def test_foreign_program_names_are_bounded() -> None:
    lines = [f"Nov 27 17:19:54 mail prog{i}[1]: hello\n".encode() for i in range(3000)]
    stats = ParseStats()
    assert list(parse_lines(lines, env=utc_env(), stats=stats)) == []
    assert stats.foreign == 3000
    assert len(stats.programs) == 1001 and stats.programs["(other)"] == 2000
    merged = ParseStats()
    merged.merge(stats)
    merged.merge(stats)
    assert sum(merged.programs.values()) == 6000 and len(merged.programs) == 1001


def test_caches_keep_no_huge_keys() -> None:
    from mailwarden.sources.postfix import PostfixParser
    from mailwarden.sources.syslog import Envelope

    big = "x" * 20_000
    lines = [
        f"Nov 27 17:19:54 {'h' * 5000}{i} postfix/smtp[1]: ABCDEF{i:04d}: to=<a@b>, relay={big}{i}"
        f"[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=4.0.0, status=deferred (host m[192.0.2.1]"
        f" said: 451 4.0.0 {big}{i} (in reply to RCPT TO command))\n".encode()
        for i in range(20)
    ] + [f"Nov 27 17:19:54 mail {'p' * 60_000}{i}[1]: hi\n".encode() for i in range(20)]
    env, parser, stats = Envelope(), PostfixParser(), ParseStats()
    out = list(parse_lines(lines, env=env, parser=parser, stats=stats))
    assert len(out) == 20 and stats.unparsed == 20  # the long tags are not program tags
    assert all(len(k) <= 255 for k in env.hosts)
    assert all(len(k) <= 128 for k in parser._tags)
    assert all(len(k) <= 1024 for k in parser._replies)
    assert all(len(k) <= 300 for k in parser._relays)
