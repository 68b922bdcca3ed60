"""trace analysis: findings, trust boundary, forged hops, and the our-MTA decision table."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.config import IdentitySettings, Settings
from mailwarden.forensics.received import parse_received
from mailwarden.forensics.run import trace_message
from mailwarden.forensics.trace import HopReport, TraceReport, analyse, org_domain
from mailwarden.identity import Identity, detect_identity

OUR_IP = "94.130.34.42"
T = "1 Jan 2024 10:00:00 +0000"


def me() -> Identity:
    return detect_identity(
        IdentitySettings(
            ips=[OUR_IP],
            names=["mail.lotsearch.de", "mx.lotsearch.de"],
            helo_names=["mail.lotsearch.de"],
        ),
        use_postconf=False,
        use_interfaces=False,
    )


def run(*lines: str, **kw: Any) -> TraceReport:
    return analyse([parse_received(x) for x in lines], me(), **kw)


def codes(r: HopReport) -> set[str]:
    return {f.code for f in r.findings}


SEED = (
    "from mail.com ([94.130.34.42]) by smtp-27.iol.local with SMTP id itOWeYZ6O42IFitOWe35TR; "
    "Tue, 13 Feb 2018 03:54:09 +0100"
)


def test_seed_is_helo_no_rdns_and_direct() -> None:
    rep = run(SEED)
    hop = rep.hops[0]
    assert {"no-rdns", "helo-bare-domain", "boundary"} <= codes(hop)
    text = " ".join(f.text for f in hop.findings)
    assert "no reverse DNS recorded" in text and "'mail.com' is the HELO" in text
    assert rep.verdict.kind == "direct"
    assert rep.verdict.confidence == "medium"  # no store to confirm it


def test_inbound_boundary_and_forged_hops_below_it() -> None:
    rep = run(
        "from localhost (localhost [127.0.0.1]) by mail.lotsearch.de (Postfix) with ESMTP id A1;"
        " Tue, 13 Feb 2018 10:00:05 +0000",
        "from mout.example.net (mout.example.net [212.227.17.10]) by mx.lotsearch.de (Postfix)"
        " with ESMTPS id B2; Tue, 13 Feb 2018 10:00:03 +0000",
        # below the boundary: claims written by outside servers
        "from [10.0.0.5] (pc.example.net [10.0.0.5]) by relay.example.net (Postfix) with ESMTPSA"
        " id C3; Tue, 13 Feb 2018 10:00:01 +0000",
        # forged: received by a host the hop above never came from, dated in the future
        "from x.spam.test ([198.51.100.66]) by mx.google.com with SMTP id D4;"
        " Tue, 13 Feb 2018 11:30:00 +0000",
    )
    v = rep.verdict
    assert v.kind == "inbound" and v.boundary == 2
    assert "boundary" in codes(rep.hops[1])
    assert "212.227.17.10" in v.summary
    forged = rep.hops[3]
    sev = {f.code: f.severity for f in forged.findings}
    assert sev["chain-break"] == "warning" and sev["time-backwards"] == "warning"
    assert all("looks forged" in f.text for f in forged.findings if f.code == "chain-break")
    # the same inconsistency above the boundary is only information
    assert "chain-break" not in codes(rep.hops[2])


def test_time_backwards_above_the_boundary_is_info() -> None:
    rep = run(
        f"from a.example.org (a.example.org [192.0.2.10]) by b.example.org; {T}",
        "from c.example.org (c.example.org [192.0.2.11]) by a.example.org;"
        " 1 Jan 2024 12:00:00 +0000",
    )
    f = next(f for f in rep.hops[1].findings if f.code == "time-backwards")
    assert f.severity == "info" and "2.0 h" in f.text
    assert rep.verdict.kind == "not-ours"


def test_helo_findings() -> None:
    rep = run(
        f"from 192.0.2.5 (unknown [192.0.2.5]) by mx.example.org; {T}",
        f"from DPLAPTOP ([192.0.2.6]) by mx.example.org; {T}",
        f"from [192.168.1.2] (h.example.net [192.0.2.7]) by mx.example.org; {T}",
        f"from [192.0.2.99] (h.example.net [192.0.2.8]) by mx.example.org; {T}",
        f"from smtp.example.net (out.example.net [192.0.2.9]) by mx.example.org; {T}",
        f"from gmail.com (dsl-1.isp.example [192.0.2.12]) by mx.example.org; {T}",
        f"from mail.lotsearch.de (h.example.net [192.0.2.13]) by mx.example.org; {T}",
    )
    sev = [{f.code: f.severity for f in r.findings} for r in rep.hops]
    assert sev[0]["helo-bare-ip"] == "warning" and sev[0]["no-rdns"] == "warning"
    assert sev[1]["helo-not-fqdn"] == "warning"
    assert sev[2]["helo-literal"] == "info"  # a client behind NAT
    assert sev[3]["helo-literal"] == "warning"  # a public literal that is not the address
    assert sev[4]["helo-rdns-mismatch"] == "info"  # same registered domain
    assert sev[5]["helo-rdns-mismatch"] == "warning" and sev[5]["helo-foreign-domain"] == "warning"
    assert sev[6]["helo-ours-foreign-ip"] == "warning"


def test_exchange_never_records_rdns_so_that_is_only_info() -> None:
    rep = run(
        "from mail-wr1-f54.google.com (209.85.221.54) by VE1EUR01FT044.mail.protection.outlook.com"
        " (10.152.3.65) with Microsoft SMTP Server id 15.20.2474.18; Mon, 2 Dec 2019 07:49:13 +0000"
    )
    f = next(f for f in rep.hops[0].findings if f.code == "no-rdns")
    assert f.severity == "info"


def test_no_identity_is_said() -> None:
    rep = analyse([parse_received(SEED)], Identity())
    assert rep.verdict.kind == "not-ours"
    assert any("identity is unknown" in n for n in rep.notes)


@dataclass
class Msg:
    qid: str
    host: str
    arrival: float


@dataclass
class Conn:
    ts: float
    daddr: str
    dport: int
    comm: str
    exe: str
    pid: int
    user: str
    mta: bool


def test_store_hit_makes_it_postfix_with_the_logged_queue_id() -> None:
    seen: list[dict[str, Any]] = []

    def lookup(*, message_id: str, around: float | None, window: float) -> list[Msg]:
        seen.append({"message_id": message_id, "around": around})
        return [Msg("4XyZ1k2LmNz8vQW", "mail", 1518490440.0)]

    rep = run(
        "from mail.lotsearch.de (mail.lotsearch.de [94.130.34.42]) by mx.other.test with ESMTPS"
        " id Q; Tue, 13 Feb 2018 03:54:09 +0100",
        message_id="<a@b>",
        lookup=lookup,
    )
    assert seen == [{"message_id": "<a@b>", "around": 1518490449.0}]
    v = rep.verdict
    assert (v.kind, v.queue_id, v.confidence) == ("postfix", "4XyZ1k2LmNz8vQW", "high")
    assert v.summary == "left through Postfix (queue id 4XyZ1k2LmNz8vQW)"


def test_store_miss_and_foreign_helo_is_direct_with_high_confidence() -> None:
    rep = run(SEED, message_id="<a@b>", lookup=lambda **kw: [])
    v = rep.verdict
    assert (v.kind, v.confidence) == ("direct", "high")
    assert v.summary == "not in our MTA's logs: sent directly from this IP by another program"
    assert any("not in our MTA's logs" in e for e in v.evidence)


def test_egress_records_name_the_program() -> None:
    conns = [
        Conn(
            1518490449.0,
            "212.48.1.1",
            25,
            "php-fpm8.2",
            "/usr/sbin/php-fpm8.2",
            4242,
            "www-data",
            False,
        )
    ]
    rep = run(SEED, message_id="<a@b>", lookup=lambda **kw: [], egress=lambda **kw: conns)
    ev = " | ".join(rep.verdict.evidence)
    assert "php-fpm8.2 (pid 4242, user www-data; NOT our MTA)" in ev
    assert rep.verdict.kind == "direct"


def test_broken_store_is_a_note_not_a_verdict() -> None:
    def lookup(**kw: Any) -> list[Msg]:
        raise RuntimeError("database is locked")

    rep = run(SEED, message_id="<a@b>", lookup=lookup)
    assert any("store look-up failed: database is locked" in n for n in rep.notes)
    assert rep.verdict.kind == "direct" and rep.verdict.confidence == "medium"


def test_matching_helo_without_store_is_only_probable() -> None:
    rep = run(
        "from mail.lotsearch.de (mail.lotsearch.de [94.130.34.42]) by mx.other.test with ESMTPS"
        " id Q; Tue, 13 Feb 2018 03:54:09 +0100"
    )
    assert (rep.verdict.kind, rep.verdict.confidence) == ("postfix", "low")


def test_org_domain() -> None:
    assert org_domain("mx1.mail.example.co.uk") == "example.co.uk"
    assert org_domain("mail.com") == "mail.com"
    assert org_domain("192.0.2.1") == ""


def test_ten_thousand_received_lines_are_bounded() -> None:
    line = (
        b"Received: from h%d.example.net (h%d.example.net [192.0.2.%d]) by h%d.example.net "
        b"(Postfix) with ESMTP id Q%d; Tue, 13 Feb 2018 03:54:09 +0100\r\n"
    )
    data = b"".join(line % (i, i, i % 250 + 1, i + 1, i) for i in range(10_000)) + b"\r\n"
    start = time.process_time()
    report, _ = trace_message(data, Settings(), identity=me(), use_store=False)
    assert len(report.hops) == 10_000
    assert time.process_time() - start < 30  # bounded, not a benchmark (see bench/)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([SEED, "(qmail 1 invoked by uid 33); 1 Jan 2024 00:00:00 -0000", ""]),
            st.text(max_size=300),
        ),
        max_size=30,
    )
)
def test_any_stack_of_headers_gives_a_verdict(values: list[str]) -> None:
    data = "".join(f"Received: {v}\n" for v in values).encode("utf-8", "replace") + b"\n"
    report, _ = trace_message(data, Settings(), identity=me(), use_store=False)
    assert report.verdict.kind in {"postfix", "direct", "inbound", "not-ours", "unknown"}
    for r in report.hops:
        for f in r.findings:
            assert f.severity in ("info", "warning", "error") and f.text


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.sampled_from(
                [
                    b"Received: ",
                    b"\r\n",
                    b"\n\t",
                    b"\x00",
                    b"(",
                    b")",
                    b"[192.0.2.1]",
                    b"from ",
                    b" by ",
                    b"; Tue, 13 Feb 2018 03:54:09 +0100",
                    b"\n\n",
                    b"Message-ID: <a@b>\n",
                ]
            ),
        ),
        max_size=80,
    ).map(b"".join)
)
def test_arbitrary_bytes_never_crash_the_whole_trace(data: bytes) -> None:
    report, _ = trace_message(b"Received: " + data, Settings(), identity=me(), use_store=False)
    assert report.verdict.summary
