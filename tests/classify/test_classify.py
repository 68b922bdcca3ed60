"""Behaviour of Classifier.classify beyond the table samples: inputs, fallbacks, caching."""

from __future__ import annotations

from mailwarden.classify import Classifier
from mailwarden.events import Reply

C = Classifier.load()


def test_breaker_marker_is_a_table_constant_and_internal() -> None:
    assert C.breaker_marker == "circuit open for provider"
    text = f"{C.breaker_marker} yahoo (breaker)"
    assert C.is_internal(text)
    cl = C.classify(Reply(None, "", text, remote=False, raw=text), dsn="4.7.1", status="deferred")
    assert cl.internal and cl.reason == "onhold" and cl.cited_ip == "" and cl.url == ""


def test_remote_text_never_counts_as_internal() -> None:
    # A remote server writing Postfix's words is still a remote reply.
    raw = "host mx.example.net[192.0.2.7] said: 451 4.3.0 queue file write error"
    r = Reply(
        451,
        "4.3.0",
        "queue file write error",
        host="mx.example.net",
        ip="192.0.2.7",
        remote=True,
        raw=raw,
    )
    cl = C.classify(r)
    assert not cl.internal and cl.reason == "systemerror"
    assert not C.is_internal(raw)


def test_suspended_wrapper_is_internal_even_after_the_parser_unwrapped_it() -> None:
    raw = (
        "delivery temporarily suspended: host mx.example.net[192.0.2.7] said: 421 4.7.0 "
        "[TSS04] Messages from 198.51.100.1 temporarily deferred due to user complaints"
    )
    r = Reply(
        421,
        "4.7.0",
        "[TSS04] Messages from 198.51.100.1 temporarily deferred due to user complaints",
        host="mx.example.net",
        ip="192.0.2.7",
        remote=True,
        raw=raw,
    )
    cl = C.classify(r)
    assert cl.internal and cl.rule == "internal/suspended"
    assert cl.reason == "badreputation"  # the quoted earlier failure's reason


def test_postfix_connect_failure_is_networkerror_about_the_receiver() -> None:
    text = "connect to mx.down.test[127.0.25.8]:25: Connection refused"
    cl = C.classify(Reply(None, "", text, "CONNECT", "mx.down.test", "127.0.25.8", False, text))
    assert (cl.reason, cl.scope, cl.internal) == ("networkerror", "transient", False)
    assert cl.cited_ip == ""  # the receiver's address is not "cited"
    assert cl.provider == "down.test"


def test_cited_ip_and_url_come_from_each_reply_despite_the_cache() -> None:
    a = C.classify(
        None,
        text="554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked "
        "using zen.spamhaus.org",
    )
    b = C.classify(
        None,
        text="554 5.7.1 Service unavailable; Client host [198.51.100.9] blocked "
        "using zen.spamhaus.org",
    )
    assert a.rule == b.rule == "reasons/blocked" and a.issuer == b.issuer == "spamhaus"
    assert (a.cited_ip, b.cited_ip) == ("192.0.2.1", "198.51.100.9")
    assert a.url == "https://check.spamhaus.org/listed/?searchterm=192.0.2.1"
    assert b.url.endswith("198.51.100.9")


def test_receivers_own_ip_is_not_the_cited_ip() -> None:
    r = Reply(
        554,
        "5.7.1",
        "Client host [192.0.2.7] blocked, you are [203.0.113.5]",
        host="mx.example.net",
        ip="192.0.2.7",
        remote=True,
    )
    assert C.classify(r).cited_ip == "203.0.113.5"


def test_code_fallbacks() -> None:
    def rule(text: str, **kw: str) -> tuple[str, str]:
        cl = C.classify(None, text=text, **kw)
        return cl.reason, cl.rule

    assert rule("550 5.1.1 gone") == ("userunknown", "status/5.1.1")
    assert rule("550 5.7.1 nope") == ("securityerror", "subject/5.7")  # 5.7.1 alone is ambiguous
    assert rule("554 5.3.4 nope") == ("emailtoolarge", "status/5.3.4")
    assert rule("521 nope") == ("notaccept", "code/521")
    assert rule("550 nope") == ("onhold", "fallback/onhold")
    assert rule("") == ("undefined", "fallback/undefined")
    assert rule("550 nope", dsn="5.2.2") == ("mailboxfull", "status/5.2.2")
    assert rule("nope", dsn="bogus") == ("onhold", "fallback/onhold")
    cl = C.classify(Reply(554, "", "go away now", command="CONNECT", remote=True))
    assert cl.reason == "blocked"
    cl = C.classify(Reply(554, "", "nope", command="CONNECT", remote=True))
    assert (cl.reason, cl.rule) == ("blocked", "command/CONNECT")


def test_user_unknown_after_data_is_a_filter() -> None:
    """Sisimai's stage rule: an unknown user is a missing mailbox when RCPT TO was refused or
    the status says X.1.1; after DATA, or at a stage nobody reported, it is a filter."""
    text = "<bob@example.org>: User unknown"
    cl = C.classify(Reply(550, "", text, command="end of DATA", remote=True))
    assert cl.reason == "filtered" and cl.rule.endswith("+remap/userunknown-after-data")
    assert cl.scope == "recipient"
    assert C.classify(Reply(550, "", text, command="RCPT TO", remote=True)).reason == "userunknown"
    cl = C.classify(Reply(550, "", text, remote=True))
    assert cl.reason == "filtered" and cl.rule.endswith("+remap/userunknown-stage-unknown")
    # the status decides on its own, at any stage
    for command in ("end of DATA", "", "RCPT TO"):
        r = Reply(550, "5.1.1", text, command=command, remote=True)
        assert C.classify(r).rule == "reasons/userunknown", command
    # the (#5.1.1) qmail puts at the end counts as the status
    assert C.classify(None, text="Sorry, no mailbox here by that name. (#5.1.1)").reason == (
        "userunknown"
    )
    # a provider's own rule is not second-guessed by the stage
    r = Reply(550, "", "<x@ezweb.ne.jp>: User unknown", host="lsean.ezweb.ne.jp", remote=True)
    assert C.classify(r).rule == "kddi/user-unknown"


def test_a_connect_timeout_is_an_expiry_only_in_a_final_report() -> None:
    text = "connect to mx.example.org[192.0.2.1]:25: Connection timed out"
    r = Reply(None, "", text, remote=False, raw=text)
    assert C.classify(r, dsn="4.4.1", status="deferred").reason == "networkerror"
    cl = C.classify(r, dsn="4.4.1", status="expired")
    assert (cl.reason, cl.rule) == ("expired", "reasons/connect-failed+remap/timeout-expired")
    # a DNS failure stays what it is, final or not
    dns = (
        "Host or domain name not found. Name service error for name=x.test type=MX: "
        "Host not found, try again"
    )
    assert C.classify(Reply(None, "", dns, raw=dns), dsn="4.4.3", status="expired").reason == (
        "networkerror"
    )


def test_provider_argument_overrides_the_host_and_selects_its_patterns() -> None:
    text = "421 4.7.1 Service unavailable - try again later"
    assert C.classify(None, text=text, provider="apple").rule == "apple/unavailable"
    assert C.classify(None, text=text).rule == "reasons/systemerror"
    r = Reply(
        451,
        "4.7.1",
        "Service unavailable - try again later",
        host="mx01.mail.icloud.com",
        remote=True,
    )
    cl = C.classify(r)
    assert (cl.provider, cl.rule) == ("apple", "apple/unavailable")


def test_multiline_prefixes_do_not_hide_phrases() -> None:
    text = (
        "550-5.7.1 [192.0.2.1 12] Our system has detected that this message is 550-5.7.1 "
        "likely unsolicited mail. To reduce the amount of spam sent to Gmail, 550-5.7.1 this "
        "message has been blocked."
    )
    cl = C.classify(None, text=text, provider="google")
    assert cl.rule == "google/likely-unsolicited" and cl.cited_ip == "192.0.2.1"


def test_huge_and_binary_input_is_cut_not_fatal() -> None:
    head = "552 5.2.2 mailbox full \x00\ufffd "
    cl = C.classify(None, text=head + "x" * 200_000 + " then@" + "y" * 100_000)
    assert cl.reason == "mailboxfull"
    cl = C.classify(None, text="550 " + "a1" * 100_000)
    assert cl.reason == "onhold"


def test_stage_from_postfix_in_reply_to_note() -> None:
    text = (
        "host mx.example.org[192.0.2.1] said: 550 5.2.1 <bob@example.org>... User unknown "
        "(in reply to end of DATA command)"
    )
    assert C.classify(None, text=text).reason == "filtered"
    assert C.classify(None, text=text.replace("end of DATA", "RCPT TO")).reason == "userunknown"


def test_blocklist_reply_at_mail_from_stays_blocked() -> None:
    r = Reply(
        554,
        "5.7.1",
        "Client host [192.0.2.1] blocked using zen.spamhaus.org",
        command="MAIL FROM",
        remote=True,
    )
    cl = C.classify(r)
    assert (cl.reason, cl.issuer) == ("blocked", "spamhaus")
    r2 = Reply(550, "5.7.1", "<root@example.jp>... Access denied", command="MAIL FROM", remote=True)
    assert C.classify(r2).reason == "rejected"


def test_a_success_is_never_a_failure() -> None:
    for text in ("250 2.0.0 Ok: queued as 4B2C1162231", "250 2.1.5 mailbox full of joy, accepted"):
        cl = C.classify(None, text=text)
        assert (cl.reason, cl.scope) == ("delivered", "")


def test_breaker_deferral_names_its_provider_when_the_caller_knows_none() -> None:
    text = "circuit open for provider swisscom (breaker)"
    cl = C.classify(Reply(None, "", text, remote=False, raw=text))
    assert (cl.internal, cl.provider) == (True, "swisscom")
    assert C.classify(Reply(None, "", text, remote=False, raw=text), provider="x").provider == "x"


def test_reply_with_only_raw_text_is_still_classified() -> None:
    cl = C.classify(Reply(None, "", "", raw="552 5.2.2 Mailbox full", remote=True))
    assert cl.reason == "mailboxfull"


def test_a_blocklist_zone_no_table_knows_is_named_by_its_domain() -> None:
    text = "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using bl.example-rbl.net"
    cl = C.classify(None, text=text)
    assert (cl.reason, cl.issuer, cl.cited_ip) == ("blocked", "example-rbl.net", "192.0.2.1")
    cl = C.classify(None, text="550 5.7.1 Your IP 192.0.2.1 is listed in rbl.foo.co.uk")
    assert cl.issuer == "foo.co.uk"
    # a known list keeps its own id and lookup URL with the cited IP filled in
    cl = C.classify(None, text=text.replace("bl.example-rbl.net", "hostkarma.junkemailfilter.com"))
    assert cl.issuer == "hostkarma"
    assert cl.url == "http://ipadmin.junkemailfilter.com/remove.php?ip=192.0.2.1"
    # words that are no zone give no issuer, and a directory is no blocklist
    assert C.classify(None, text="550 Your IP is listed in our database").issuer == ""
    cl = C.classify(
        None, text="550 5.1.1 User bob (bob@example.org) not listed in Domino Directory"
    )
    assert (cl.reason, cl.issuer) == ("userunknown", "")


def test_a_refusal_after_a_greeting_banner_counts_not_the_banner() -> None:
    r = Reply(
        220,
        "",
        "laposte 421 4.2.1 Service refuse. Veuillez essayer plus tard.",
        command="CONNECT",
        host="smtpz4.laposte.net",
        remote=True,
    )
    cl = C.classify(r)
    assert cl.reason == "blocked" and cl.rule == "orange/service-refused"
    # a mailbox status at the greeting does not make the refusal about a mailbox
    r = Reply(554, "5.2.1", "nope", command="CONNECT", remote=True)
    assert C.classify(r).rule == "command/CONNECT"


def test_an_unexplained_refusal_of_mail_from_is_a_rejected_sender() -> None:
    r = Reply(550, "5.7.1", "nope", command="MAIL FROM", remote=True)
    assert C.classify(r).rule == "command/MAIL FROM"
    r = Reply(550, "", "Unauthenticated senders not allowed", command="MAIL FROM", remote=True)
    assert C.classify(r).reason == "securityerror"
