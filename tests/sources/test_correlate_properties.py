"""Property test of the correlator: any interleaving of message histories (queue ids reused
after "removed", histories cut by the start of the log) gives each message back once, with
exactly its own attempts, on both the event path and the fused line path."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.events import Message
from mailwarden.sources.correlate import Correlator, correlate_lines
from mailwarden.sources.postfix import parse_lines

from .conftest import utc_env

QIDS = ["1A2B3C4D5E", "2B3C4D5E6F", "3C4D5E6F70", "4Y2HRm3BXXz4xqJ"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[list[str]], list[tuple[str, int, bool]]]:
    """Per message: its lines (in order), and (qid, number of attempts, removed?)."""
    n = draw(st.integers(1, 12))
    msgs: list[list[str]] = []
    facts: list[tuple[str, int, bool]] = []
    for i in range(n):
        qid = draw(st.sampled_from(QIDS))
        origin = draw(st.sampled_from(["uid", "client", "sasl"]))
        lines = []
        if origin == "uid":
            lines.append(f"postfix/pickup[1]: {qid}: uid=33 from=<m{i}@example.test>")
        elif origin == "client":
            lines.append(f"postfix/smtpd[2]: {qid}: client=app[192.0.2.{i}]")
        else:
            lines.append(f"postfix/smtpd[2]: {qid}: client=app[192.0.2.{i}], sasl_method=PLAIN, "
                         f"sasl_username=u{i}")  # fmt: skip
        lines.append(f"postfix/cleanup[3]: {qid}: message-id=<id{i}@example.test>")
        k = draw(st.integers(0, 4))
        for j in range(k):
            if j == 0 or draw(st.booleans()):
                lines.append(f"postfix/qmgr[4]: {qid}: from=<m{i}@example.test>, size={100 + i}, "
                             "nrcpt=1 (queue active)")  # fmt: skip
            lines.append(
                f"postfix/smtp[5]: {qid}: to=<r{i}.{j}@example.org>, relay=mx.example.org["
                f"192.0.2.99]:25, delay=1, delays=0/0/0/1, dsn=4.0.0, status=deferred (host mx."
                f"example.org[192.0.2.99] said: 451 4.0.0 try later {i}.{j} (in reply to RCPT TO "
                "command))"
            )
        removed = draw(st.booleans())
        if removed:
            lines.append(f"postfix/qmgr[4]: {qid}: removed")
        msgs.append(lines)
        facts.append((qid, k, removed))
    return msgs, facts


def interleave(msgs: list[list[str]], seed: int) -> list[bytes]:
    """Merge the histories in a random order that keeps each one's order and never has two
    live messages with the same queue id (Postfix reuses an id only after "removed")."""
    rnd = random.Random(seed)
    pending = [list(m) for m in msgs]
    live: dict[str, int] = {}  # qid -> message index using it now
    out: list[bytes] = []
    t = 0
    while any(pending):
        ready = []
        for i, m in enumerate(pending):
            if not m:
                continue
            qid = m[0].split("]: ", 1)[1].split(":", 1)[0]
            if live.get(qid, i) == i:
                ready.append(i)
        if not ready:  # a message without "removed" blocks its id: end it (log gap)
            i = next(i for i, m in enumerate(pending) if m)
            pending[i] = []
            continue
        i = rnd.choice(ready)
        line = pending[i].pop(0)
        qid = line.split("]: ", 1)[1].split(":", 1)[0]
        live[qid] = i
        if line.endswith(": removed") or not pending[i]:
            live.pop(qid, None)
        t += 1
        out.append(f"Nov 27 17:{t // 60:02d}:{t % 60:02d} mail {line}\n".encode())
    return out


@given(histories(), st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_property_every_history_comes_back_once(
    case: tuple[list[list[str]], list[tuple[str, int, bool]]], seed: int
) -> None:
    msgs, _facts = case
    lines = interleave(msgs, seed)
    # what each message line belongs to: the i in "m{i}"/"id{i}"/"r{i}." tags
    want_attempts = sorted(ln.split("to=<", 1)[1].split("@")[0].encode()
                           for ln in map(bytes.decode, lines) if "to=<" in ln)  # fmt: skip
    for path in ("events", "fused"):
        if path == "events":
            got = list(Correlator(resolve_users=False).run(parse_lines(lines, env=utc_env())))
        else:
            got = [m for m in correlate_lines(lines, correlator=Correlator(resolve_users=False),
                                              env=utc_env()) if isinstance(m, Message)]  # fmt: skip
        # every attempt exactly once, and always in the message of the same history
        seen = sorted(a.recipient.split("@")[0].encode() for m in got for a in m.attempts)
        assert seen == want_attempts, path
        for m in got:
            owners = {a.recipient.split(".")[0] for a in m.attempts}
            if m.message_id:
                owners.add("r" + m.message_id.split("@")[0][2:])
            assert len(owners) <= 1, (path, m)
        # a removed history is one complete message
        assert sum(m.complete for m in got) == sum(1 for ln in lines if ln.endswith(b"removed\n"))
        sasl = [m for m in got if m.sasl_username]
        assert all(m.origin_kind == "sasl" for m in sasl)
