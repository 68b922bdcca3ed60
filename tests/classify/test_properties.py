"""Any input: classify and provider lookups never raise and always answer in the vocabulary."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.classify import Classifier
from mailwarden.events import REASONS, Reply

C = Classifier.load()
SCOPES = {"ours", "recipient", "transient", ""}

words = st.sampled_from(
    [
        "550",
        "5.7.1",
        "421",
        "4.7.0",
        "blocked",
        "spamhaus",
        "user",
        "unknown",
        "[192.0.2.1]",
        "http://x.test/?ip=1.2.3.4",
        "delivery temporarily suspended:",
        "circuit open for provider",
        "quota",
        "::",
        "2001:db8::1",
        "@",
        "x@y.test",
        "\x00",
        "é",
        "(in reply to RCPT TO command)",
    ]
)
texts = st.one_of(st.text(max_size=300), st.lists(words, max_size=30).map(" ".join))


@settings(max_examples=300, deadline=None)
@given(
    text=texts,
    dsn=st.text(max_size=12),
    host=st.text(max_size=40),
    remote=st.booleans(),
    command=st.sampled_from(["", "CONNECT", "RCPT TO", "end of DATA", "MAIL FROM"]),
)
def test_classify_total(text: str, dsn: str, host: str, remote: bool, command: str) -> None:
    for cl in (
        C.classify(None, text=text, dsn=dsn),
        C.classify(Reply(None, "", text, command, host, "", remote, text), dsn=dsn),
    ):
        assert cl.reason in REASONS and cl.scope in SCOPES and cl.rule
        if cl.internal:
            assert cl.cited_ip == "" and cl.url == ""


@settings(max_examples=300, deadline=None)
@given(host=st.text(max_size=80))
def test_provider_lookups_total(host: str) -> None:
    for p in (C.provider_for_host(host), C.provider_for_domain(host)):
        assert isinstance(p, str) and p == p.strip().lower()
