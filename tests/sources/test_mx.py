"""Connection-level replies: smtp(8)'s lines about one MX host, and the ``connect to`` lines
it writes without a queue id (ConnectClaims gives them one, drops the one a status line
repeats)."""

from __future__ import annotations

from mailwarden.events import Delivery, MxReply
from mailwarden.sources.correlate import Correlator
from mailwarden.sources.postfix import ConnectClaims, PostfixParser, parse_lines, session_key
from mailwarden.sources.stats import ParseStats

from .conftest import DATA, utc_env

T = b"Nov 27 21:20:02 mail "
C1 = T + b"postfix/smtp[2970]: connect to mx1.e.de[198.51.100.18]:25: Connection refused\n"
C2 = T + b"postfix/smtp[2970]: connect to mx2.e.de[198.51.100.19]:25: Connection refused\n"
S1 = (
    T + b"postfix/smtp[2970]: 97ABD16A182: to=<u1@e.de>, relay=none, delay=0.03, "
    b"delays=0/0.02/0.01/0, dsn=4.4.1, status=deferred (connect to mx2.e.de[198.51.100.19]:25: "
    b"Connection refused)\n"
)
S2 = S1.replace(b"u1@", b"u2@")
OTHER = T + b"postfix/smtp[2975]: 9DCEA16A177: to=<u1@g.de>, relay=mx2.g.de[198.51.100.21]:25, "
OTHER += b"delay=0.02, delays=0.01/0/0.01/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n"


def claimed(lines: list[bytes]) -> tuple[list[bytes], ConnectClaims]:
    c = ConnectClaims()
    return list(c.lines(lines)), c


def test_session_key_is_host_program_and_pid_of_smtp_and_lmtp_only() -> None:
    i = C1.find(b"]: ")
    assert session_key(C1, i) == b"mail postfix/smtp[2970"
    lmtp = C1.replace(b"postfix/smtp", b"postfix-out/lmtp")
    assert session_key(lmtp, lmtp.find(b"]: ")) == b"mail postfix-out/lmtp[2970"
    for prog in (b"postfix/smtpd", b"postfix/qmgr", b"smtp", b"postfix/trivial-rewrite"):
        other = C1.replace(b"postfix/smtp", prog)
        assert session_key(other, other.find(b"]: ")) is None


def test_the_last_connect_failure_is_the_status_lines_twin() -> None:
    """Postfix 3.7 (as in tests/data/sources/mx-replies.log): two MX hosts refuse the connection;
    a connect line for each, then the status lines repeat the second one."""
    out, c = claimed([C1, OTHER, C2, S1, S2])
    assert out == [
        OTHER,
        C1.replace(b"]: connect", b"]: 97ABD16A182: connect"),
        S1,
        S2,
    ]
    assert c.twins == 1 and c.held == {}


def test_a_connect_failure_before_an_accepting_mx_is_kept() -> None:
    sent = S1.replace(b"relay=none", b"relay=mx2.e.de[198.51.100.19]:25").replace(
        b"status=deferred (connect to mx2.e.de[198.51.100.19]:25: Connection refused)",
        b"status=sent (250 2.0.0 Ok)",
    )
    out, c = claimed([C1, sent])
    assert out == [C1.replace(b"]: connect", b"]: 97ABD16A182: connect"), sent]
    assert c.twins == 0


def test_any_queue_id_line_of_the_process_claims_only_twins_of_status_lines() -> None:
    said = T + b"postfix/smtp[2970]: 97ABD16A182: host mx3.e.de[198.51.100.20] said: 451 4.7.1 "
    said += b"Greylisted (in reply to RCPT TO command)\n"
    out, c = claimed([C1, C2, said])
    assert out == [
        C1.replace(b"]: connect", b"]: 97ABD16A182: connect"),
        C2.replace(b"]: connect", b"]: 97ABD16A182: connect"),
        said,
    ]
    # a line without queue id (TLS chatter) or of another process claims nothing
    tls = T + b"postfix/smtp[2970]: Untrusted TLS connection established to x[192.0.2.1]:25\n"
    out, c = claimed([C1, tls, OTHER])
    assert out == [tls, OTHER] and c.release() == [C1] and c.held == {}


def test_parse_lines_keeps_held_lines_across_chunks() -> None:
    stats = ParseStats()
    parser = PostfixParser()
    claims = ConnectClaims()
    first = list(parse_lines([C1, C2], env=utc_env(), stats=stats, parser=parser, claims=claims))
    assert first == [] and stats.total == 0
    evs = list(parse_lines([S1, S2], env=utc_env(), stats=stats, parser=parser, claims=claims))
    assert [type(e) for e in evs] == [MxReply, Delivery, Delivery]
    mx = evs[0]
    assert isinstance(mx, MxReply)
    assert (mx.qid, mx.kind, mx.relay_host, mx.relay_ip, mx.relay_port) == (
        "97ABD16A182",
        "connect",
        "mx1.e.de",
        "198.51.100.18",
        25,
    )
    assert mx.reply is not None and mx.reply.command == "CONNECT" and not mx.reply.remote
    # every line read is counted once: the twin as understood and not needed
    assert (stats.total, stats.parsed, stats.ignored) == (4, 3, 1)


def test_without_claims_a_connect_line_is_a_reply_of_no_message() -> None:
    evs = list(parse_lines([C1], env=utc_env()))
    assert len(evs) == 1 and isinstance(evs[0], MxReply) and evs[0].qid == ""


def test_the_correlator_attaches_them_without_changing_any_recipient() -> None:
    lines = (DATA / "mx-replies.log").read_bytes().splitlines(keepends=True)
    claims = ConnectClaims()
    evs = list(parse_lines(lines, env=utc_env(), claims=claims))
    evs += list(parse_lines(claims.release(), env=utc_env()))
    msgs = {m.qid: m for m in Correlator(resolve_users=False).run(evs)}  # type: ignore[arg-type]
    # T-Online style greeting block at the first MX, the second accepts
    a = msgs["8D6F116A177"]
    assert [(r.kind, r.relay_host) for r in a.mx_replies] == [("refused", "mx1.a-prov.de")]
    assert [(d.recipient, d.status) for d in a.attempts] == [("u1@a.de", "sent")]
    # a 421 at RCPT then the connection lost, both at the first MX: connection-level
    d = msgs["947BD16A17E"]
    assert [r.kind for r in d.mx_replies] == ["said", "lost"]
    assert {x.status for x in d.attempts} == {"sent"}
    # both MX hosts refuse connections, twice: the first MX each time (the second is in
    # the status lines)
    e = msgs["97ABD16A182"]
    assert [(r.kind, r.relay_host) for r in e.mx_replies] == [("connect", "mx1.e-prov.de")] * 2
    assert len(e.attempts) == 4
    # one 450 per recipient at the first MX: one line each
    assert len(msgs["9DCEA16A177"].mx_replies) == 2
    # the line of a process that never named its queue id stays without one
    alone = [e for e in evs if isinstance(e, MxReply) and not e.qid]
    assert [r.relay_host for r in alone] == ["mx1.z-prov.de"]
    assert sum(len(m.mx_replies) for m in msgs.values()) + len(alone) == 16
