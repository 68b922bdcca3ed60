"""Header block reader: folding, CRLF, mbox, pasted values, malformed lines, limits."""

from __future__ import annotations

import pytest

from mailwarden.forensics import message
from mailwarden.forensics.message import read_headers


def test_folded_crlf_headers_top_first_and_body_ignored() -> None:
    data = (
        b"Received: from a.example (a.example [192.0.2.1])\r\n"
        b"\tby b.example (Postfix) with ESMTP id AAA;\r\n"
        b"\tTue, 13 Feb 2018 03:54:09 +0100\r\n"
        b"received: from c.example ([192.0.2.2]) by a.example; Tue, 13 Feb 2018 03:54:08 +0100\r\n"
        b"Message-ID: <x@y>\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Received: from body.example ([192.0.2.3]) by nowhere\r\n"
    )
    h = read_headers(data)
    assert h.received == [
        "from a.example (a.example [192.0.2.1]) by b.example (Postfix) with ESMTP id AAA; "
        "Tue, 13 Feb 2018 03:54:09 +0100",
        "from c.example ([192.0.2.2]) by a.example; Tue, 13 Feb 2018 03:54:08 +0100",
    ]
    assert (h.message_id, h.subject, h.malformed) == ("<x@y>", "hi", 0)


def test_mbox_separator_and_malformed_lines_are_counted_not_fatal() -> None:
    data = (
        b"From MAILER-DAEMON Tue Feb 13 03:54:09 2018\n"
        b"  orphan continuation\n"
        b"this is not a header\n"
        b"Received: from a ([192.0.2.1]) by b\n"
        b"\n"
    )
    h = read_headers(data)
    assert h.received == ["from a ([192.0.2.1]) by b"]
    assert h.malformed == 2


def test_pasted_received_value_without_field_name() -> None:
    h = read_headers(
        b"from mail.com ([94.130.34.42]) by smtp-27.iol.local with SMTP id\n"
        b"  itOWeYZ6O42IFitOWe35TR; Tue, 13 Feb 2018 03:54:09 +0100\n"
    )
    assert h.received == [
        "from mail.com ([94.130.34.42]) by smtp-27.iol.local with SMTP id "
        "itOWeYZ6O42IFitOWe35TR; Tue, 13 Feb 2018 03:54:09 +0100"
    ]


def test_nul_bytes_and_invalid_utf8_survive() -> None:
    h = read_headers(b"Received: from a\x00b ([192.0.2.1]) by \xff\xfe; x\n\n")
    assert len(h.received) == 1 and "\x00" not in h.received[0]


def test_limits_cut_a_huge_header_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(message, "MAX_HEADER_BYTES", 1000)
    h = read_headers(b"Received: from a ([192.0.2.1]) by b\n" + b"X-Pad: " + b"y" * 5000)
    assert h.truncated and h.received
    monkeypatch.setattr(message, "MAX_FIELD", 100)
    h = read_headers(b"Received: from a\n" + b"  " + b"z " * 400 + b"\n\n")
    assert len(h.received[0]) <= 100


def test_empty_and_binary_input() -> None:
    assert read_headers(b"").received == []
    assert read_headers(bytes(range(256)) * 4).received == []


def test_deeply_folded_header_is_linear() -> None:
    import time

    data = b"Received: from a ([192.0.2.1]) by b\n" + b" x\n" * 300_000 + b"\n"
    start = time.process_time()
    h = read_headers(data)
    assert len(h.received) == 1 and len(h.received[0]) <= message.MAX_FIELD
    assert time.process_time() - start < 5  # quadratic behaviour took minutes
