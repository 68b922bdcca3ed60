"""The parser builds events positionally with sources._fast: guard the field order it assumes."""

from __future__ import annotations

import dataclasses

import pytest

from mailwarden.events import (
    Arrival,
    BounceNotice,
    Delivery,
    Expired,
    Held,
    MessageIdSeen,
    QueueActive,
    Removed,
    Reply,
)
from mailwarden.sources._fast import constructor

BASE = ("ts", "host", "qid", "program")
ORDER = {
    Arrival: (*BASE, "uid", "sender"),
    MessageIdSeen: (*BASE, "message_id", "resent"),
    QueueActive: (*BASE, "sender", "size", "nrcpt"),
    Delivery: (*BASE, "recipient", "orig_recipient", "relay", "relay_host", "relay_ip",
               "relay_port", "conn_use", "delay", "delays", "dsn", "status", "text", "reply"),
    BounceNotice: (*BASE, "kind", "notice_qid"),
    Expired: (*BASE, "sender"),
    Removed: BASE,
    Held: (*BASE, "released", "reason"),
    Reply: ("code", "enhanced", "text", "command", "host", "ip", "remote", "raw"),
}  # fmt: skip


@pytest.mark.parametrize("cls", list(ORDER), ids=lambda c: c.__name__)
def test_positional_field_order_used_by_the_parser(cls: type) -> None:
    names = tuple(f.name for f in dataclasses.fields(cls))
    assert names[: len(ORDER[cls])] == ORDER[cls]


def test_fast_constructor_equals_init_and_keeps_frozen() -> None:
    make = constructor(Delivery)
    args = (1.5, "mail", "ABCDEF", "postfix/smtp", "a@b", "", "none", "", "", None, 2, 0.5)
    d = make(*args)
    assert d == Delivery(*args) and hash(d) == hash(Delivery(*args))
    assert type(d) is Delivery and d.status == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.status = "sent"  # type: ignore[misc]
