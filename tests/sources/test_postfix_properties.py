"""Property tests of the Postfix line parser: generated status, queue and reject lines come
back field for field; mangled lines never raise and are always accounted for."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailwarden.events import Delivery, InboundReject, QueueActive
from mailwarden.sources.correlate import correlate_lines
from mailwarden.sources.postfix import PostfixParser, parse_lines, qid_of
from mailwarden.sources.stats import ParseStats

from .conftest import utc_env

_label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
hostname = st.lists(_label, min_size=2, max_size=4).map(".".join)
address = st.builds(
    lambda lp, d: f"{lp}@{d}", st.from_regex(r"\A[a-zA-Z0-9._+=-]{1,20}\Z"), hostname
)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.from_regex(r"\A[0-9a-f]{1,4}\Z"), min_size=8, max_size=8).map(":".join)
short_qid = st.from_regex(r"\A[0-9A-F]{10,12}\Z")
long_qid = st.from_regex(
    r"\A[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{10}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{4,6}\Z"
)
qid = st.one_of(short_qid, long_qid)
program = st.sampled_from(["postfix/smtp", "postfix-bulk/smtp", "postfix/suspended/smtp",
                           "postfix/lmtp", "postfix/error", "postfix/local", "postfix/virtual",
                           "postfix/pipe", "postfix/retry", "postfix-out/out/smtp"])  # fmt: skip
delay = st.one_of(st.integers(0, 500_000).map(str),
                  st.integers(0, 99).map(lambda i: f"0.{i:02d}".rstrip("0").rstrip(".") or "0"),
                  st.floats(1, 9.9).map(lambda f: f"{f:.1f}"))  # fmt: skip
reason = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    min_size=1,
    max_size=200,
).filter(lambda s: s == s.strip() and s != "")


@st.composite
def status_lines(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    q = draw(qid)
    rcpt = draw(address)
    orig = draw(st.one_of(st.just(""), address))
    relay_kind = draw(st.sampled_from(["none", "host4", "host6", "local", "socket"]))
    rh = draw(hostname)
    if relay_kind == "none":
        relay, host, ip, port = "none", "", "", None
    elif relay_kind == "local":
        relay, host, ip, port = "local", "", "", None
    elif relay_kind == "socket":
        relay, host, ip, port = f"{rh}[private/dovecot-lmtp]", rh, "private/dovecot-lmtp", None
    else:
        ip = draw(ipv4 if relay_kind == "host4" else ipv6)
        port = draw(st.integers(1, 65535))
        relay, host = f"{rh}[{ip}]:{port}", rh
    cu = draw(st.one_of(st.none(), st.integers(2, 99)))
    d = draw(delay)
    delays = "/".join(draw(st.lists(delay, min_size=4, max_size=4)))
    dsn = draw(st.from_regex(r"\A[245]\.[0-7]\.[0-9]{1,2}\Z"))
    status = draw(st.sampled_from(["sent", "deferred", "bounced", "deliverable",
                                   "undeliverable"]))  # fmt: skip
    text = draw(reason)
    prog = draw(program)
    line = (
        f"{q}: to=<{rcpt}>, " + (f"orig_to=<{orig}>, " if orig else "") + f"relay={relay}, "
        + (f"conn_use={cu}, " if cu else "") + f"delay={d}, delays={delays}, dsn={dsn}, "
        f"status={status} ({text})"
    )  # fmt: skip
    want = dict(qid=q, program=prog, recipient=rcpt, orig_recipient=orig, relay=relay,
                relay_port=port, conn_use=cu, delay=float(d), delays=delays, dsn=dsn,
                status=status, text=text)  # fmt: skip
    if relay_kind not in ("none", "local"):
        want["relay_host"], want["relay_ip"] = host, ip
    return f"Nov 27 17:19:54 mail {prog}[4242]: {line}\n", want


@given(status_lines())
@settings(max_examples=150)
def test_property_status_lines_round_trip(case: tuple[str, dict[str, object]]) -> None:
    line, want = case
    stats = ParseStats()
    (ev,) = list(parse_lines([line.encode()], env=utc_env(), stats=stats))
    assert isinstance(ev, Delivery)
    for k, v in want.items():
        assert getattr(ev, k) == v, k
    assert ev.reply is not None and ev.reply.raw == want["text"]
    assert qid_of(line.encode()) == str(want["qid"]).encode()


@given(q=qid, sender=st.one_of(st.just(""), address), size=st.integers(0, 10**9),
       n=st.integers(1, 10**5))  # fmt: skip
def test_property_queue_active(q: str, sender: str, size: int, n: int) -> None:
    line = f"2026-11-27T17:31:17.5+01:00 vm postfix/qmgr[1]: {q}: from=<{sender}>, size={size}, nrcpt={n} (queue active)"  # noqa: E501
    (ev,) = list(parse_lines([line.encode()], env=utc_env()))
    assert isinstance(ev, QueueActive)
    assert (ev.qid, ev.sender, ev.size, ev.nrcpt) == (q, sender, size, n)


@given(
    stage=st.sampled_from(["RCPT", "MAIL", "DATA", "END-OF-MESSAGE", "EHLO"]),
    ip=st.one_of(ipv4, ipv6),
    code=st.sampled_from([450, 451, 550, 554]),
    enh=st.from_regex(r"\A[45]\.[0-7]\.[0-9]\Z"),
    text=reason.filter(lambda s: "; from=<" not in s and "; proto=" not in s),
    sender=st.one_of(st.just(""), address),
    rcpt=address,
    helo=hostname,
)
def test_property_noqueue_rejects(
    stage: str, ip: str, code: int, enh: str, text: str, sender: str, rcpt: str, helo: str
) -> None:
    line = (
        f"Nov 27 17:24:07 mail postfix/smtpd[19665]: NOQUEUE: reject: {stage} from "
        f"unknown[{ip}]: {code} {enh} {text}; from=<{sender}> to=<{rcpt}> proto=ESMTP "
        f"helo=<{helo}>"
    )
    (ev,) = list(parse_lines([line.encode()], env=utc_env()))
    assert isinstance(ev, InboundReject)
    assert (ev.action, ev.stage, ev.client_ip, ev.sender, ev.recipient, ev.helo) == (
        "reject",
        stage,
        ip,
        sender,
        rcpt,
        helo,
    )
    assert ev.reply is not None and (ev.reply.code, ev.reply.enhanced) == (code, enh)
    assert ev.reply.text == " ".join(text.split()) and not ev.reply.remote


@given(case=status_lines(), cut=st.integers(0, 400), junk=st.binary(max_size=30))
@settings(max_examples=150)
def test_property_mangled_lines_never_raise(
    case: tuple[str, dict[str, object]], cut: int, junk: bytes
) -> None:
    raw = case[0].encode()
    assume(cut < len(raw))
    lines = [raw[:cut], raw[:cut] + junk, junk + raw, raw.replace(b", ", b",", 1)]
    for fn in ("events", "messages"):
        stats = ParseStats()
        if fn == "events":
            list(parse_lines(lines, env=utc_env(), stats=stats, parser=PostfixParser()))
        else:
            list(correlate_lines(lines, env=utc_env(), stats=stats))
        assert stats.total == 4
        assert stats.total == stats.parsed + stats.ignored + stats.unparsed + stats.foreign
