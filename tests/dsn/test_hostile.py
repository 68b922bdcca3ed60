"""Hostile and broken MIME: a clear error (SourceError) or a (maybe empty) result, never another
exception and never a hang. Property tests build messages from bounce-like pieces and noise."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.errors import SourceError
from mailwarden.events import REASONS
from mailwarden.sources.dsn import BounceReport, parse_bounce

DSN_PART = (
    b"Content-Type: message/delivery-status\n\n"
    b"Reporting-MTA: dns; mx.example.org\n\n"
    b"Final-Recipient: rfc822; user@example.com\nAction: failed\nStatus: 5.1.1\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\n"
)


def check(data: bytes) -> BounceReport | None:
    try:
        rep = parse_bounce(data)
    except SourceError:
        return None
    for r in rep.recipients:
        assert r.reason in REASONS
        assert "\x00" not in r.diagnostic + r.recipient
    return rep


def bounce(body: bytes, ctype: bytes = b"multipart/report; boundary=BB") -> bytes:
    return (
        b"From: MAILER-DAEMON@example.org\nTo: me@example.net\n"
        b"Subject: Undelivered Mail Returned to Sender\nContent-Type: " + ctype + b"\n\n" + body
    )


def test_multipart_without_boundary_still_reads_the_fields() -> None:
    rep = check(bounce(DSN_PART, b"multipart/report; report-type=delivery-status"))
    assert rep is not None
    assert [r.recipient for r in rep.recipients] == ["user@example.com"]
    assert rep.recipients[0].status == "5.1.1"


def test_nested_twenty_levels() -> None:
    body = DSN_PART
    for i in range(20):
        b = f"L{i}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary=" + b + b"\n\n--" + b + b"\n" + body
            + b"\n--" + b + b"--\n"
        )  # fmt: skip
    rep = check(bounce(body, b"multipart/mixed; boundary=TOP"))
    assert rep is not None  # deeper than MAX_DEPTH is simply not read


def test_thousands_of_nested_multiparts_are_refused_up_front() -> None:
    body = b"x\n"
    for i in range(3000):
        b = f"N{i}".encode()
        body = b"Content-Type: multipart/mixed; boundary=" + b + b"\n\n--" + b + b"\n" + body
    # the email package is quadratic in nested boundaries: refused before parsing
    with pytest.raises(SourceError, match="too complex"):
        parse_bounce(bounce(body, b"multipart/mixed; boundary=N2999"))


def test_thousands_of_nested_messages_are_an_error() -> None:
    body = b"Subject: x\n\nhello\n"
    for _ in range(2000):
        body = b"Content-Type: message/rfc822\n\n" + body
    with pytest.raises(SourceError, match="nested too deeply"):
        parse_bounce(b"From: MAILER-DAEMON@example.org\n" + body)


def test_ten_megabyte_part() -> None:
    big = b"Content-Type: text/plain\n\n" + (b"A" * 76 + b"\n") * (10 * 1024 * 1024 // 77)
    body = b"--BB\n" + big + b"\n--BB\n" + DSN_PART + b"\n--BB--\n"
    rep = check(bounce(body))
    assert rep is not None and rep.recipients[0].recipient == "user@example.com"


def test_nul_bytes_and_broken_base64() -> None:
    text = (
        b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
        + b"!!!not base64\x00==\n"
    )
    body = b"--BB\n" + text + b"\n--BB\n" + DSN_PART.replace(b"user", b"us\x00er") + b"\n--BB--\n"
    rep = check(bounce(body))
    assert rep is not None and rep.recipients[0].recipient == "user@example.com"


def test_non_utf8_headers() -> None:
    data = bounce(DSN_PART, b"multipart/report").replace(
        b"Subject: Undelivered", b"Subject: \xff\xfe\x81 =?x-unknown?q?=FF?= Undelivered"
    )
    assert check(data) is not None


def test_too_large_is_a_clear_error() -> None:
    from mailwarden.sources.dsn import mime

    with pytest.raises(SourceError, match="too large"):
        parse_bounce(b"Subject: x\n\n" + b"x" * (mime.MAX_INPUT + 1))


PIECES = [
    b"Final-Recipient: rfc822; a@example.com\n",
    b"Final-Recipient: rfc822;\n",
    b"Original-Recipient: ;;;\n",
    b"Action: failed\n",
    b"Status: 5.\n",
    b"Status: 9.9.9.9.9\n",
    b"Diagnostic-Code: smtp; 550-5.7.1 " + b"x" * 5000 + b"\n",
    b"Remote-MTA: dns; [::1]\n",
    b'Content-Type: multipart/mixed; boundary=""\n',
    b"Content-Type: message/delivery-status\n",
    b"Content-Type: message/rfc822\n",
    b"Content-Type: text/plain; charset=x-no-such-charset\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"--BB\n",
    b"--BB--\n",
    b"<a@example.com>: host mx[1.2.3.4] said: 550 no (in reply to RCPT TO command)\n",
    b"  a@example.com\n    SMTP error from remote mail server after RCPT TO:<a@example.com>:\n",
    b">>> RCPT To:<a@example.com>\n<<< 550 5.1.1 unknown\n",
    b"Hi. This is the qmail-send program\n",
    b"=?utf-8?b?!!!?=\n",
    base64.b64encode(b"Final-Recipient: rfc822; b@example.com") + b"\n",
    b"\n",
    b"\x00\xff\xfe",
    b"@@@@<<<>>>" * 50 + b"\n",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=200)), max_size=40),
    st.sampled_from([b"multipart/report; boundary=BB", b"text/plain", b"multipart/mixed", b"\xff"]),
)
def test_random_bounce_like_messages(pieces: list[bytes], ctype: bytes) -> None:
    check(bounce(b"".join(pieces), ctype))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    check(data)
    check(b"Subject: x\n" + data)
