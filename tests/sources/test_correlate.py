"""Correlator: messages from the real sample log, queue id reuse, bounce links, bounded memory."""

from __future__ import annotations

import pwd

import pytest

from mailwarden.events import (
    Arrival,
    Delivery,
    InboundReject,
    Message,
    MessageIdSeen,
    MxReply,
    QueueActive,
    Removed,
    SaslFailure,
)
from mailwarden.sources.correlate import Correlator, correlate_lines, link_bounces
from mailwarden.sources.postfix import parse_lines, qid_of, shard_of
from mailwarden.sources.stats import ParseStats

from .conftest import SAMPLE_LOG, utc_env


def sample_messages(**kw: object) -> dict[str, Message]:
    with SAMPLE_LOG.open("rb") as fh:
        events = list(parse_lines(fh, env=utc_env()))
    msgs = list(Correlator(**kw).run(events))  # type: ignore[arg-type]
    by_qid = {m.qid: m for m in msgs}
    assert len(by_qid) == len(msgs)  # no queue id reused inside the sample
    return by_qid


def test_sendmail_message_that_bounced_at_swisscom() -> None:
    m = sample_messages()["394D3162231"]
    assert m.complete and m.removed_at is not None
    assert (m.origin_kind, m.uid, m.sender, m.size, m.nrcpt) == (
        "uid",
        33,
        "bounces@example.test",
        419,
        2,
    )
    assert m.message_id == "20261127171954.394D3162231@mail.example.test"
    assert sorted(a.recipient for a in m.attempts) == ["alice@bluewin.test", "bob@bluemail.test"]
    assert {a.status for a in m.attempts} == {"bounced"}
    assert [(n.kind, n.notice_qid) for n in m.notices] == [("non-delivery", "51D53162239")]
    try:
        want_user = pwd.getpwuid(33).pw_name
    except KeyError:
        want_user = ""
    assert m.user == want_user


def test_bounce_notification_is_linked_to_its_original() -> None:
    msgs = sample_messages()
    dsn = msgs["51D53162239"]
    assert dsn.bounce_of == "394D3162231"
    assert dsn.sender == "" and dsn.origin_kind == "unknown"
    originals = {m.bounce_of for m in msgs.values() if m.bounce_of}
    assert all(msgs[o].notices for o in originals)


def test_smtp_submission_origin_and_arrivals_before_log_start() -> None:
    msgs = sample_messages()
    m = msgs["1758616223D"]
    assert (m.origin_kind, m.client_name, m.client_ip) == ("client", "unknown", "127.0.25.1")
    # lines of messages whose arrival is not in the sample still yield their attempts
    early = msgs["8684816229A"]
    assert early.origin_kind == "unknown" and not early.complete
    assert [a.recipient for a in early.attempts] == ["user29@down.test"]


def test_holds_are_recorded() -> None:
    msgs = sample_messages()
    assert msgs["2027416228E"].held


def _ev(cls: type, ts: float, qid: str, **kw: object) -> object:
    return cls(ts, "mail", qid, "postfix/x", **kw)


def test_queue_id_reuse_starts_a_new_message() -> None:
    c = Correlator(resolve_users=False)
    out: list[Message] = []
    for ev in [
        _ev(Arrival, 1, "ABCDEF123", uid=0, sender="a@x"),
        _ev(QueueActive, 2, "ABCDEF123", sender="a@x", size=1, nrcpt=1),
        _ev(Delivery, 3, "ABCDEF123", recipient="r@y", status="deferred"),
        # the "removed" line is missing (log gap); the id comes back for another message
        _ev(
            Arrival,
            10,
            "ABCDEF123",
            client_name="c",
            client_ip="192.0.2.1",
            sasl_method="PLAIN",
            sasl_username="joe",
        ),
        _ev(Delivery, 11, "ABCDEF123", recipient="s@y", status="sent"),
        _ev(Removed, 12, "ABCDEF123"),
    ]:
        out.extend(c.feed(ev))  # type: ignore[arg-type]
    assert c.reused == 1 and len(c) == 0
    first, second = out
    assert (first.arrival, first.origin_kind, first.complete) == (1, "uid", False)
    assert [a.recipient for a in first.attempts] == ["r@y"]
    assert (second.arrival, second.origin_kind, second.sasl_username) == (10, "sasl", "joe")
    assert second.complete and [a.recipient for a in second.attempts] == ["s@y"]


def test_message_id_before_arrival_is_merged() -> None:
    c = Correlator(resolve_users=False)
    c.feed(_ev(MessageIdSeen, 1, "ABCDEF124", message_id="m@x"))  # type: ignore[arg-type]
    c.feed(_ev(Arrival, 1, "ABCDEF124", client_ip="192.0.2.1"))  # type: ignore[arg-type]
    (m,) = c.feed(_ev(Removed, 2, "ABCDEF124"))  # type: ignore[arg-type]
    assert (m.message_id, m.origin_kind, m.client_ip) == ("m@x", "client", "192.0.2.1")
    assert c.reused == 0


def test_idle_messages_are_evicted_after_the_horizon() -> None:
    c = Correlator(horizon=3600, resolve_users=False)
    assert c.feed(_ev(Arrival, 0, "AAAAAA1", uid=1)) == ()  # type: ignore[arg-type]
    assert c.feed(_ev(Arrival, 1800, "AAAAAA2", uid=1)) == ()  # type: ignore[arg-type]
    out = c.feed(_ev(Arrival, 3700, "AAAAAA3", uid=1))  # type: ignore[arg-type]
    assert [m.qid for m in out] == ["AAAAAA1"] and not out[0].complete
    out = c.feed(_ev(Delivery, 5500, "AAAAAA3", recipient="x"))  # type: ignore[arg-type]
    assert [m.qid for m in out] == ["AAAAAA2"]
    assert c.evicted_idle == 2 and len(c) == 1


def test_open_messages_are_capped_least_recently_used_first() -> None:
    c = Correlator(max_open=100, resolve_users=False)
    emitted: list[Message] = []
    for i in range(1000):
        emitted.extend(c.feed(_ev(Arrival, i, f"Q{i:08d}", uid=1)))  # type: ignore[arg-type]
        # keep touching message 0: it must survive as the most recently used
        emitted.extend(c.feed(_ev(Delivery, i, "Q00000000", recipient=f"r{i}")))  # type: ignore[arg-type]
    assert len(c) == 100 and c.evicted_full == 900
    assert "Q00000000" not in {m.qid for m in emitted}
    assert [m.qid for m in emitted[:3]] == ["Q00000001", "Q00000002", "Q00000003"]
    rest = c.flush()
    assert len(rest) == 100 and len(c) == 0
    (zero,) = [m for m in rest if m.qid == "Q00000000"]
    assert len(zero.attempts) == 1000


def test_sharded_correlation_gives_the_same_messages(tmp_path: object) -> None:
    lines = SAMPLE_LOG.read_bytes().splitlines(keepends=True)
    shards: list[list[bytes]] = [[], [], []]
    for ln in lines:
        q = qid_of(ln)
        shards[hash(q) % 3 if q else 0].append(ln)
    got: list[Message] = []
    stats = ParseStats()
    for sh in shards:
        got.extend(Correlator().run(parse_lines(sh, env=utc_env(), stats=stats)))
    link_bounces(got)
    want = sample_messages()
    assert stats.total == len(lines)
    assert {m.qid: (len(m.attempts), m.bounce_of, m.message_id) for m in got} == {
        m.qid: (len(m.attempts), m.bounce_of, m.message_id) for m in want.values()
    }


def test_user_name_resolution_can_be_turned_off() -> None:
    m = sample_messages(resolve_users=False)["394D3162231"]
    assert m.user == "" and m.uid == 33


# -- the fused fast path must give exactly what the event path gives -------------------------


def _signature(m: Message) -> tuple[object, ...]:
    return (m.host, m.qid, m.arrival, m.origin_kind, m.uid, m.client_ip, m.sasl_username,
            m.sender, m.message_id, m.size, m.nrcpt, tuple(m.attempts), m.bounce_of,
            tuple(m.notices), m.expired_at, m.removed_at, m.held, m.complete)  # fmt: skip


def _sources() -> list[tuple[str, list[bytes]]]:
    import gzip

    from .conftest import DATA

    return [
        ("sample", SAMPLE_LOG.read_bytes().splitlines(keepends=True)),
        ("genlog", gzip.decompress((DATA / "genlog-5k.log.gz").read_bytes()).splitlines(True)),
        ("iso", gzip.decompress((DATA / "genlog-3k-iso.log.gz").read_bytes()).splitlines(True)),
        ("annotated", [ln for ln in (DATA / "postfix-lines.txt").read_bytes().splitlines(True)
                       if not ln.startswith(b"#")]),
    ]  # fmt: skip


@pytest.mark.parametrize("shards", [1, 3])
def test_correlate_lines_equals_the_event_path(shards: int) -> None:
    evictions = 0
    for name, lines in _sources():
        slow: list[object] = []
        fast: list[object] = []
        s1, s2 = ParseStats(), ParseStats()
        for me in range(shards):
            sh = (me, shards) if shards > 1 else None
            c1 = Correlator(horizon=120, max_open=40)
            evs = list(parse_lines(lines, env=utc_env(), stats=s1, shard=sh))
            slow.extend(_signature(m) for m in c1.run(evs))  # type: ignore[arg-type]
            slow.extend(
                e
                for e in evs
                if isinstance(e, InboundReject | SaslFailure)
                or (isinstance(e, MxReply) and not e.qid)
            )
            c2 = Correlator(horizon=120, max_open=40)
            for x in correlate_lines(lines, correlator=c2, env=utc_env(), stats=s2, shard=sh):
                fast.append(_signature(x) if isinstance(x, Message) else x)
            assert (c1.evicted_idle, c1.evicted_full, c1.reused) == (
                c2.evicted_idle,
                c2.evicted_full,
                c2.reused,
            )
            evictions += c1.evicted_idle + c1.evicted_full
        key = repr
        assert sorted(fast, key=key) == sorted(slow, key=key), name
        assert s1.as_dict() == s2.as_dict(), name
        assert s1.total == len(lines)
        assert sum(1 for x in slow if isinstance(x, tuple)) > 0
    assert evictions > 0  # the eviction paths were exercised too


def test_shard_of_partitions_by_message() -> None:
    lines = SAMPLE_LOG.read_bytes().splitlines(keepends=True)
    by_qid: dict[bytes, set[int]] = {}
    for ln in lines:
        q = qid_of(ln)
        if q is not None:
            by_qid.setdefault(q, set()).add(shard_of(ln, 4))
    assert all(len(s) == 1 for s in by_qid.values())
    assert len({next(iter(s)) for s in by_qid.values()}) > 1


def test_refused_by_our_cleanup_ends_the_message_and_holds_are_marked() -> None:
    lines = [
        b"Nov 27 18:07:00 mail postfix/smtpd[3320]: 9F6012C0A21: client=unknown[203.0.113.5]\n",
        b"Nov 27 18:07:00 mail postfix/cleanup[3320]: 9F6012C0A21: reject: header Subject: You "
        b"won from unknown[203.0.113.5]; from=<a@b.test> to=<c@example.test> proto=ESMTP "
        b"helo=<x>: 5.7.1 Spam subject\n",
        b"Nov 27 18:07:01 mail postfix/smtpd[3320]: 9F6012C0A22: client=localhost[127.0.0.1]\n",
        b"Nov 27 18:07:01 mail postfix/cleanup[3320]: 9F6012C0A22: hold: header X-Spam-Flag: YES "
        b"from localhost[127.0.0.1]; from=<a@b.test> to=<c@example.test> proto=ESMTP "
        b"helo=<localhost>: Held for review\n",
        b"Nov 27 18:07:02 mail postfix/smtpd[19665]: NOQUEUE: reject: RCPT from unknown[127.0.25."
        b"1]: 450 4.7.1 <p1@x.test>: Recipient address rejected: no; from=<n@example.test> "
        b"to=<p1@x.test> proto=ESMTP helo=<app1.example.test>\n",
    ]
    for run in ("events", "fused"):
        c = Correlator(resolve_users=False)
        if run == "events":
            out: list[object] = []
            for ev in parse_lines(lines, env=utc_env()):
                out.extend(c.feed(ev))
        else:
            out = [x for x in correlate_lines(lines, correlator=c, env=utc_env(), flush=False)
                   if isinstance(x, Message)]  # fmt: skip
        assert [m.qid for m in out] == ["9F6012C0A21"], run  # type: ignore[attr-defined]
        assert len(c) == 1
        (held,) = c.flush()
        assert held.qid == "9F6012C0A22" and held.held and not held.complete


def test_unknown_event_kinds_do_not_start_messages() -> None:
    from dataclasses import dataclass

    from mailwarden.events import PostfixEvent

    @dataclass(frozen=True, slots=True)
    class SomethingNew(PostfixEvent):
        pass

    c = Correlator(resolve_users=False)
    assert c.feed(SomethingNew(1.0, "mail", "ABCDEF1", "postfix/x")) == ()
    assert len(c) == 0


def test_discard_and_milter_hold_from_smtpd() -> None:
    lines = [
        b"Nov 27 18:07:00 mail postfix/smtpd[1]: AAAAAAAAA1: client=unknown[203.0.113.5]\n",
        b"Nov 27 18:07:00 mail postfix/smtpd[1]: AAAAAAAAA1: discard: RCPT from unknown[203.0.11"
        b"3.5]: <x@example.test>: Recipient address triggers DISCARD action; from=<a@b.test> "
        b"to=<x@example.test> proto=ESMTP helo=<x>\n",
        b"Nov 27 18:07:01 mail postfix/smtpd[1]: AAAAAAAAA2: client=unknown[203.0.113.6]\n",
        b"Nov 27 18:07:01 mail postfix/smtpd[1]: AAAAAAAAA2: milter-hold: END-OF-MESSAGE from "
        b"unknown[203.0.113.6]: milter triggers HOLD action; from=<a@b.test> to=<y@example.test> "
        b"proto=ESMTP helo=<x>\n",
    ]
    c = Correlator(resolve_users=False)
    out = [x for x in correlate_lines(lines, correlator=c, env=utc_env(), flush=False)]
    assert [m.qid for m in out if isinstance(m, Message)] == ["AAAAAAAAA1"]
    assert [e.action for e in out if isinstance(e, InboundReject)] == ["discard", "milter-hold"]
    (held,) = c.flush()
    assert held.held and held.qid == "AAAAAAAAA2"
