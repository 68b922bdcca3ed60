"""The socket protocol: round trip of every field, strict decoding of bad input, and the
NFLOG packet parser on real header bytes and on garbage (counted, never fatal)."""

from __future__ import annotations

import socket
import struct

import pytest

from mailwarden.egress.nflog import NFULA_PAYLOAD, NFULA_PREFIX, NFULA_UID, parse_messages
from mailwarden.egress.wire import decode, decode_line, encode
from mailwarden.errors import ValidationError
from mailwarden.events import EgressConnect


def test_round_trip_keeps_every_field() -> None:
    ev = EgressConnect(
        ts=1.25,
        source="ebpf",
        daddr="2001:db8::25",
        dport=25,
        family=6,
        saddr="::1",
        sport=4,
        pid=10,
        ppid=9,
        uid=33,
        gid=33,
        user="www-data",
        comm="php",
        exe="/usr/bin/php",
        cmdline=("php", "mail.php", "ünïcode"),
        cwd="/w",
        parents=((9, "fpm"), (1, "init")),
        cgroup="/system.slice/x.service",
        unit="x.service",
        container="docker:ab",
        script="/w/mail.php",
        pool="www",
        netns=4026531840,
        verdict="blocked",
        mta=False,
        provider="google",
        ptr="mx.google.com",
    )
    assert decode(decode_line(encode(ev).rstrip(b"\n"))) == ev


@pytest.mark.parametrize(
    "line",
    [b"not json", b"[1,2]", b'{"no":"type"}', b'"str"', b"\xff\xfe"],
)
def test_bad_lines_are_rejected(line: bytes) -> None:
    with pytest.raises(ValidationError):
        decode_line(line)


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "connect", "ts": 1.0, "source": "x", "daddr": "a"},  # no dport
        {"type": "connect", "ts": "1", "source": "x", "daddr": "a", "dport": 25},
        {"type": "connect", "ts": 1.0, "source": "x", "daddr": "a", "dport": "25"},
        {"type": "connect", "ts": 1.0, "source": "x", "daddr": "a", "dport": 25, "pid": True},
        {"type": "connect", "ts": 1.0, "source": "x", "daddr": "a", "dport": 25, "cmdline": "ls"},
        {"type": "connect", "ts": 1.0, "source": 5, "daddr": "a", "dport": 25},
    ],
)
def test_bad_events_are_rejected(obj: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError):
        decode(obj)


def test_unknown_fields_are_ignored() -> None:
    ev = decode(
        {
            "type": "connect",
            "ts": 1,
            "source": "ebpf",
            "daddr": "a",
            "dport": 25,
            "future_field": {"x": 1},
        }
    )
    assert ev.ts == 1.0 and ev.dport == 25


def _nla(t: int, p: bytes) -> bytes:
    n = 4 + len(p)
    return struct.pack("=HH", n, t) + p + b"\0" * ((4 - n % 4) % 4)


def _msg(attrs: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(5)) + attrs
    return struct.pack("=IHHII", 16 + len(body), 4 << 8, 0, 0, 0) + body


def _ipv4_syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 60, 1, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return ip + struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0xA0, 2, 64240, 0, 0)


def test_nflog_parser_reads_uid_prefix_and_tuple_and_counts_garbage() -> None:
    good = _msg(
        _nla(NFULA_PREFIX, b"mailwarden-block \0")
        + _nla(NFULA_UID, struct.pack("!I", 33))
        + _nla(NFULA_PAYLOAD, _ipv4_syn("10.250.1.1", "10.250.1.2", 40000, 587))
    )
    no_uid = _msg(_nla(NFULA_PAYLOAD, _ipv4_syn("10.0.0.1", "10.0.0.2", 1, 25)))
    garbage = _msg(_nla(NFULA_PAYLOAD, b"\x00\x01\x02"))
    truncated = good[:-10]
    recs, bad = parse_messages(good + no_uid + garbage, 5, 123.0)
    assert bad == 1
    assert [(r.prefix, r.uid, r.saddr, r.daddr, r.sport, r.dport, r.family) for r in recs] == [
        ("mailwarden-block", 33, "10.250.1.1", "10.250.1.2", 40000, 587, 4),
        ("", None, "10.0.0.1", "10.0.0.2", 1, 25, 4),
    ]
    recs, bad = parse_messages(truncated, 5, 1.0)
    assert recs == [] and bad == 1


def test_verdict_join_pairs_fifo_per_key_and_loses_nothing() -> None:
    from mailwarden.egress.service import VerdictJoin

    def e(uid: int, port: int, verdict: str = "", pid: int | None = None) -> EgressConnect:
        return EgressConnect(
            ts=0.0,
            source="nflog" if verdict else "ebpf",
            daddr="10.0.0.2",
            dport=port,
            uid=uid,
            pid=pid,
            verdict=verdict,
        )

    j = VerdictJoin(0.25)
    assert j.add_event(e(33, 25, pid=1), 0.0) is None
    assert j.add_event(e(33, 25, pid=2), 0.0) is None
    assert j.add_event(e(65534, 25, pid=3), 0.0) is None
    got = j.add_verdict(e(33, 25, "blocked"), 0.01)
    assert got is not None and (got.pid, got.verdict) == (1, "blocked")  # oldest first
    got = j.add_verdict(e(65534, 25, "blocked"), 0.02)
    assert got is not None and got.pid == 3
    # a verdict before its event
    assert j.add_verdict(e(102, 587, "allowed"), 0.03) is None
    got = j.add_event(e(102, 587, pid=4), 0.04)
    assert got is not None and (got.pid, got.verdict) == (4, "allowed")
    # unmatched on both sides come out after their wait, nothing is dropped
    assert j.add_verdict(e(7, 465, "blocked"), 0.05) is None
    assert j.expired(0.1) == []
    late = j.expired(0.3)
    assert [(x.pid, x.verdict) for x in late] == [(2, "")]
    late = j.expired(1.0)
    assert [(x.source, x.uid, x.verdict) for x in late] == [("nflog", 7, "blocked")]
    assert len(j.events) == 0 and len(j.verdicts) == 0


def test_verdict_join_uses_the_socket_owner() -> None:
    from mailwarden.egress.service import VerdictJoin

    j = VerdictJoin(0.25)
    # www-data runs a setuid-root helper: the task's uid is 33, netfilter sees socket uid 0
    ebpf = EgressConnect(ts=0.0, source="ebpf", daddr="10.0.0.2", dport=25, uid=33, sk_uid=0, pid=9)
    nflog = EgressConnect(
        ts=0.0, source="nflog", daddr="10.0.0.2", dport=25, uid=0, sk_uid=0, verdict="allowed"
    )
    assert j.add_event(ebpf, 0.0) is None
    got = j.add_verdict(nflog, 0.01)
    assert got is not None and (got.pid, got.uid, got.verdict) == (9, 33, "allowed")
