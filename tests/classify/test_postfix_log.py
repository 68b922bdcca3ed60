"""The classifier on every delivery of a real Postfix 3.7 log (recorded on this machine type
against local fake receivers, /work/shared/data/postfix/sample.log), read by the real sources
parser: what the breaker and the reports will see."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mailwarden.classify import Classifier
from mailwarden.events import Delivery
from mailwarden.sources.postfix import parse_lines

LOG = Path(__file__).resolve().parents[1] / "data" / "classify" / "postfix-sample.log"
C = Classifier.load()


def deliveries() -> list[Delivery]:
    with LOG.open("rb") as fh:
        return [e for e in parse_lines(fh) if isinstance(e, Delivery) and e.status != "sent"]


def classify(d: Delivery):  # type: ignore[no-untyped-def]
    host = d.relay_host or (d.reply.host if d.reply else "")
    provider = C.provider_for_host(host) or C.provider_for_domain(d.recipient)
    return C.classify(d.reply, dsn=d.dsn, status=d.status, text=d.text, provider=provider)


def test_every_failed_delivery_gets_a_decided_reason() -> None:
    ds = deliveries()
    assert len(ds) >= 35
    got = [(d, classify(d)) for d in ds]
    assert all(cl.reason not in ("undefined", "onhold") or cl.internal for _, cl in got), [
        (d.text, cl) for d, cl in got if cl.reason in ("undefined", "onhold") and not cl.internal
    ]


def test_postfix_own_deferrals_are_internal_and_nothing_else_is() -> None:
    own = (
        "delivery temporarily suspended",
        "deferred transport",
        "circuit open for provider",
        "address resolver failure",
    )
    for d in deliveries():
        cl = classify(d)
        assert cl.internal == d.text.startswith(own), (d.text, cl)


def test_the_recorded_outcomes() -> None:
    kinds: Counter[tuple[str, str]] = Counter()
    for d in deliveries():
        cl = classify(d)
        if cl.internal:
            continue
        kinds[(cl.reason, cl.scope)] += 1
        if "Swisscom AG" in d.text:
            assert (cl.reason, cl.scope, cl.cited_ip) == ("blocked", "ours", "127.0.0.1")
        if "User unknown" in d.text:
            assert (cl.reason, cl.scope) == ("userunknown", "recipient")
        if "Connection refused" in d.text:
            assert (cl.reason, cl.scope, cl.cited_ip) == ("networkerror", "transient", "")
        if "A problem occurred" in d.text:  # the fake T-Online greeting block
            assert (cl.reason, cl.scope) == ("blocked", "ours")
        if "Host not found" in d.text:
            assert cl.reason == "hostunknown"
    assert {
        ("blocked", "ours"),
        ("userunknown", "recipient"),
        ("networkerror", "transient"),
    } <= set(kinds)
