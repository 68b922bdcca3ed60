"""Whole logs: format-faithful synthetic logs (shared/tools/genlog.py, both stamp forms) and the
real sample, checked against independent counts of the raw text."""

from __future__ import annotations

import gzip
from collections import Counter
from datetime import UTC, datetime

import pytest

from mailwarden.events import (
    Arrival,
    BounceNotice,
    Delivery,
    InboundReject,
    MessageIdSeen,
    QueueActive,
    Removed,
)
from mailwarden.sources.correlate import Correlator
from mailwarden.sources.postfix import parse_lines
from mailwarden.sources.stats import ParseStats

from .conftest import DATA, SAMPLE_LOG, utc_env

CORPORA = {
    "genlog": gzip.decompress((DATA / "genlog-5k.log.gz").read_bytes()),
    "genlog-iso": gzip.decompress((DATA / "genlog-3k-iso.log.gz").read_bytes()),
    "sample": SAMPLE_LOG.read_bytes(),
}


def oracle(lines: list[bytes]) -> Counter[str]:
    """What the raw text says, by plain substring tests (no parser involved)."""
    c: Counter[str] = Counter()
    for ln in lines:
        if b": to=<" in ln and b", status=" in ln:
            c["Delivery"] += 1
        elif b"(queue active)" in ln:
            c["QueueActive"] += 1
        elif ln.rstrip().endswith(b": removed"):
            c["Removed"] += 1
        elif b": message-id=" in ln:
            c["MessageIdSeen"] += 1
        elif b": uid=" in ln or b": client=" in ln:
            c["Arrival"] += 1
        elif b" notification: " in ln:
            c["BounceNotice"] += 1
        elif b"NOQUEUE: " in ln and b"lost connection" not in ln:
            c["InboundReject"] += 1
        elif b"status=expired" in ln:
            c["Expired"] += 1
        elif b"placed on hold" in ln or b"released from hold" in ln:
            c["Held"] += 1
        else:
            c["other"] += 1
    return c


@pytest.mark.parametrize("name", list(CORPORA))
def test_every_line_is_understood_and_counts_match_the_text(name: str) -> None:
    lines = CORPORA[name].splitlines(keepends=True)
    stats = ParseStats()
    events = list(parse_lines(lines, env=utc_env(), stats=stats, start_offset=0))
    assert stats.unparsed == 0, stats.samples[:3]
    assert stats.foreign == 0 and stats.out_of_order == 0
    assert stats.total == len(lines) == stats.parsed + stats.ignored
    got = Counter(type(e).__name__ for e in events)
    want = oracle(lines)
    assert stats.ignored == want.pop("other")
    assert got == want


@pytest.mark.parametrize("name", ["genlog", "genlog-iso"])
def test_correlated_messages_account_for_every_line(name: str) -> None:
    lines = CORPORA[name].splitlines(keepends=True)
    events = list(parse_lines(lines, env=utc_env()))
    msgs = list(Correlator(resolve_users=False).run(events))
    by_key = {(m.qid, m.arrival): m for m in msgs}
    assert len(by_key) == len(msgs)
    n = Counter(type(e).__name__ for e in events)
    # every removed message is complete; attempts are all there, each exactly once
    assert sum(m.complete for m in msgs) == n["Removed"]
    assert sum(len(m.attempts) for m in msgs) == n["Delivery"]
    assert {id(a) for m in msgs for a in m.attempts} == {
        id(e) for e in events if isinstance(e, Delivery)
    }
    # origins: pickup -> uid, smtpd -> client; DSNs (sender <>) are linked to their original
    arrivals = [e for e in events if isinstance(e, Arrival)]
    assert sum(m.origin_kind in ("uid", "client") for m in msgs) == len(arrivals)
    qids = {m.qid for m in msgs}
    for m in msgs:
        if m.bounce_of:
            assert m.sender == "" and m.bounce_of in qids
    notices = [e for e in events if isinstance(e, BounceNotice)]
    assert sum(bool(m.bounce_of) for m in msgs) == len(notices) > 0
    # sizes and counts come from qmgr, message ids from cleanup
    assert all(m.size is not None and m.nrcpt is not None for m in msgs if m.complete)
    assert sum(bool(m.message_id) for m in msgs) == n["MessageIdSeen"]
    assert sum(m.expired_at is not None for m in msgs) == n["Expired"]
    for m in msgs:
        if m.attempts:
            assert m.arrival <= min(a.ts for a in m.attempts)


def test_stamps_of_both_forms_are_utc_and_in_the_generated_range() -> None:
    start = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    for name in ("genlog", "genlog-iso"):
        lines = CORPORA[name].splitlines(keepends=True)
        evs = list(parse_lines(lines, env=utc_env()))
        assert start <= evs[0].ts < start + 5  # type: ignore[union-attr]
        assert all(start <= e.ts < start + 86400 for e in evs)  # type: ignore[union-attr]
    iso = list(parse_lines(CORPORA["genlog-iso"].splitlines(True)[:1], env=utc_env()))
    assert iso[0].ts % 1 != 0 and iso[0].host == "vm"  # type: ignore[union-attr]


def test_kinds_seen_in_the_corpora() -> None:
    evs = list(parse_lines(CORPORA["genlog"].splitlines(True), env=utc_env()))
    kinds = {type(e) for e in evs}
    assert {Arrival, MessageIdSeen, QueueActive, Delivery, Removed, BounceNotice,
            InboundReject} <= kinds  # fmt: skip
    statuses = Counter(e.status for e in evs if isinstance(e, Delivery))
    assert {"sent", "deferred", "bounced"} <= set(statuses)
