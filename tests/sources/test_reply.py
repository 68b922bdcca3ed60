"""parse_reply: remote replies, Postfix's own reasons, multi-line continuation prefixes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.sources.reply import parse_reply, split_code


def test_said_reply_with_command() -> None:
    r = parse_reply(
        "host mx01.swisscom.test[127.0.25.2] said: 554 5.7.1 Swisscom AG IP: 127.0.0.1, You are "
        "not allowed to send us mail. (in reply to RCPT TO command)"
    )
    assert (r.code, r.enhanced, r.command, r.host, r.ip, r.remote) == (
        554,
        "5.7.1",
        "RCPT TO",
        "mx01.swisscom.test",
        "127.0.25.2",
        True,
    )
    assert r.text == "Swisscom AG IP: 127.0.0.1, You are not allowed to send us mail."


def test_multiline_gmail_reply_loses_every_prefix() -> None:
    r = parse_reply(
        "host gmail-smtp-in.l.google.com[142.250.1.27] said: 550-5.7.1 [192.0.2.1      12] Our "
        "system has detected 550-5.7.1 likely unsolicited mail. 550-5.7.1  https://support."
        "google.com/mail/?p=UnsolicitedMessageError 550 5.7.1  for more information. x1si.37 - "
        "gsmtp (in reply to end of DATA command)"
    )
    assert r.code == 550 and r.enhanced == "5.7.1" and r.command == "end of DATA"
    assert "550" not in r.text and "5.7.1" not in r.text
    assert r.text.startswith("[192.0.2.1 12] Our system has detected likely unsolicited mail.")
    assert r.text.endswith("for more information. x1si.37 - gsmtp")


def test_multiline_without_enhanced_code() -> None:
    code, enh, text = split_code("421-mx.example.org busy 421-please 421 try later")
    assert (code, enh, text) == (421, "", "mx.example.org busy please try later")


@pytest.mark.parametrize(
    ("text", "command", "host", "ip"),
    [
        (
            "connect to mx.down.test[127.0.25.8]:25: Connection refused",
            "CONNECT",
            "mx.down.test",
            "127.0.25.8",
        ),
        (
            "connect to mx.x.test[2001:db8::25]:25: Connection timed out",
            "CONNECT",
            "mx.x.test",
            "2001:db8::25",
        ),
        (
            "lost connection with mx.x.test[192.0.2.1] while sending RCPT TO",
            "RCPT TO",
            "mx.x.test",
            "192.0.2.1",
        ),
        (
            "lost connection with mx.x.test[192.0.2.1] while sending end of data -- message may be "
            "sent more than once",
            "end of DATA",
            "mx.x.test",
            "192.0.2.1",
        ),
        (
            "lost connection with mx.x.test[192.0.2.1] while performing the EHLO handshake",
            "EHLO",
            "mx.x.test",
            "192.0.2.1",
        ),
        (
            "conversation with mx.x.test[192.0.2.1] timed out while receiving the initial server "
            "greeting",
            "CONNECT",
            "mx.x.test",
            "192.0.2.1",
        ),
        (
            "TLS is required, but was not offered by host mx.x.test[192.0.2.1]",
            "STARTTLS",
            "mx.x.test",
            "192.0.2.1",
        ),
        (
            "Host or domain name not found. Name service error for name=x.test type=MX: Host not "
            "found, try again",
            "",
            "",
            "",
        ),
    ],
)
def test_postfix_own_reasons_are_not_remote(text: str, command: str, host: str, ip: str) -> None:
    r = parse_reply(text)
    assert r.code is None and not r.remote
    assert (r.command, r.host, r.ip) == (command, host, ip)
    assert r.text == text and r.raw == text


def test_refused_to_talk_is_a_greeting_reply() -> None:
    r = parse_reply(
        "delivery temporarily suspended: host mx.orange.test[127.0.25.7] refused to talk to me: "
        "421 4.7.0 mx.orange.test Too many connections from 127.0.0.1, try again later"
    )
    assert (r.code, r.enhanced, r.command, r.remote, r.host) == (
        421,
        "4.7.0",
        "CONNECT",
        True,
        "mx.orange.test",
    )
    assert r.text == "mx.orange.test Too many connections from 127.0.0.1, try again later"


@pytest.mark.parametrize(
    ("diag", "code", "enh", "text"),
    [
        ("smtp; 550 5.1.1 <x@y>: user unknown", 550, "5.1.1", "<x@y>: user unknown"),
        ("SMTP; 552-5.2.2 over quota 552 5.2.2 try later", 552, "5.2.2", "over quota try later"),
        (
            "X-Postfix; host mx[192.0.2.1] said: 550 5.7.1 no (in reply to RCPT TO command)",
            550,
            "5.7.1",
            "no",
        ),
        ("5.1.1 mailbox unavailable", None, "5.1.1", "mailbox unavailable"),
    ],
)
def test_bare_diagnostics(diag: str, code: int | None, enh: str, text: str) -> None:
    r = parse_reply(diag)
    assert (r.code, r.enhanced, r.text) == (code, enh, text)


_words = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll"), whitelist_characters=" .,:;@<>/=[]_"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "")


@given(
    code=st.sampled_from([421, 450, 451, 452, 550, 552, 553, 554]),
    enh=st.one_of(st.just(""), st.from_regex(r"\A[45]\.[0-7]\.[0-9]{1,2}\Z")),
    lines=st.lists(_words, min_size=1, max_size=6),
    cmd=st.sampled_from(["RCPT TO", "MAIL FROM", "end of DATA", "DATA", "EHLO"]),
)
def test_property_multiline_replies_fold_to_clean_text(
    code: int, enh: str, lines: list[str], cmd: str
) -> None:
    enh_part = f" {enh}" if enh else ""
    parts = [f"{code}-{enh}{' ' if enh else ''}{ln}" for ln in lines[:-1]]
    parts.append(f"{code}{enh_part} {lines[-1]}")
    text = f"host mx.example.org[192.0.2.7] said: {' '.join(parts)} (in reply to {cmd} command)"
    r = parse_reply(text)
    assert r.code == code
    assert r.enhanced == enh
    assert r.command == cmd
    assert (r.host, r.ip, r.remote) == ("mx.example.org", "192.0.2.7", True)
    assert r.text == " ".join(" ".join(lines).split())


@given(st.text(max_size=300))
def test_property_never_raises(text: str) -> None:
    r = parse_reply(text)
    assert r.raw == text
    assert r.code is None or 200 <= r.code <= 599
    assert "\n" not in r.text


def test_tls_refusal_quotes_the_remote_reply() -> None:
    r = parse_reply(
        "TLS is required, but host mx.x.test[192.0.2.1] refused to start TLS: 454 4.7.0 TLS not "
        "available due to local problem"
    )
    assert (r.code, r.enhanced, r.command, r.remote, r.host) == (
        454,
        "4.7.0",
        "STARTTLS",
        True,
        "mx.x.test",
    )
    assert r.text == "TLS not available due to local problem"
    assert parse_reply("Server certificate not trusted").command == "STARTTLS"


def test_multiline_whose_last_line_lacks_the_enhanced_code() -> None:
    r = parse_reply("host m[192.0.2.1] said: 550-5.7.1 first 550-second 550 third")
    assert (r.code, r.enhanced, r.text) == (550, "5.7.1", "first second third")


def _diagnostics() -> list[dict[str, str]]:
    import json

    from .conftest import DATA

    path = DATA / "sisimai-diagnostics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_real_bounce_diagnostics_from_many_mtas() -> None:
    """Diagnostic-Code texts of real bounces (sisimai/set-of-emails, BSD-2): the code and the
    enhanced code come out, and no multi-line prefix is left in the text."""
    import re

    checked = 0
    for rec in _diagnostics():
        diag, code, status = rec["diagnosticcode"], rec["replycode"], rec["status"]
        r = parse_reply(diag)
        assert r.raw == diag and "\n" not in r.text
        if code and diag.startswith(code):
            checked += 1
            assert r.code == int(code), rec["file"]
            m = re.match(r"\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b", diag)
            if m:
                assert r.enhanced == m.group(1), rec["file"]
            assert not re.search(rf"(^|\s){code}-", r.text), (rec["file"], r.text)
            if status and r.enhanced:
                assert r.enhanced[0] == status[0], rec["file"]
    assert checked >= 100
