"""Hostile Received values: never an exception, bounded time, results stay well-formed."""

from __future__ import annotations

import ipaddress
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.forensics.received import Hop, parse_received
from mailwarden.forensics.tokens import MAX_LEN

# Pieces real headers are built of, so that the fuzzer reaches deep into the grammar.
PIECES = st.sampled_from(
    [
        "from",
        "by",
        "with",
        "id",
        "for",
        "via",
        "(",
        ")",
        "[",
        "]",
        ";",
        " ",
        "\t",
        "\r\n ",
        "\x00",
        "helo=",
        "HELO",
        "EHLO ",
        "unknown",
        "mail.example.org",
        "[192.0.2.1]",
        "192.0.2.1",
        "[IPv6:2001:db8::1]",
        "::ffff:192.0.2.7",
        "user@",
        ":25",
        ".25",
        "ESMTPSA",
        "(Exim 4.96)",
        "(Postfix)",
        "Microsoft SMTP Server",
        "verified",
        "claiming to be",
        "envelope-from <a@b>",
        "AUTH: LOGIN u",
        "Tue, 13 Feb 2018 03:54:09 +0100",
        "\\",
        '"',
    ]
)


def _well_formed(hop: Hop) -> None:
    assert isinstance(hop, Hop)
    if hop.parsed:
        ipaddress.ip_address(hop.ip)  # a parsed hop always carries a valid address
    else:
        assert hop.why
    for text in (hop.helo, hop.rdns, hop.by, hop.id, hop.envfrom, hop.raw):
        assert "\x00" not in text and "\n" not in text
    assert len(hop.raw) <= MAX_LEN


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, max_size=60).map("".join))
def test_grammar_pieces_never_crash(value: str) -> None:
    _well_formed(parse_received(value))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_arbitrary_text_never_crashes(value: str) -> None:
    _well_formed(parse_received(value))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 50_000), st.sampled_from(["(", ")", "((()", "[", "; ", "a ", "\x00"]))
def test_huge_and_unbalanced_values_are_bounded(n: int, piece: str) -> None:
    value = "from x " + piece * n + " by y; Tue, 13 Feb 2018 03:54:09 +0100"
    start = time.process_time()
    hop = parse_received(value)
    _well_formed(hop)
    # not a benchmark: a generous bound that only a quadratic blow-up would break
    assert time.process_time() - start < 2.0


def test_deeply_nested_comment_still_parses_the_hop() -> None:
    value = (
        "from h.example.net (h.example.net [192.0.2.9]) "
        + "(" * 3000
        + "x"
        + ")" * 3000
        + " by mx.example.org (Postfix) with ESMTP id ABC; Tue, 13 Feb 2018 03:54:09 +0100"
    )
    hop = parse_received(value)
    assert (hop.ip, hop.rdns, hop.by, hop.id) == (
        "192.0.2.9",
        "h.example.net",
        "mx.example.org",
        "ABC",
    )


def test_unbalanced_parenthesis_does_not_swallow_the_rest() -> None:
    hop = parse_received(
        "from snake.example.com(192.0.2.229) by x.example.org via smap (V1.3 id xma093673; "
        "Wed, 26 Mar 03 20:43:24 -0600"
    )
    assert (hop.ip, hop.rdns, hop.helo, hop.id) == (
        "192.0.2.229",
        "snake.example.com",
        "",
        "xma093673",
    )
    assert hop.date == "2003-03-26T20:43:24-06:00"
