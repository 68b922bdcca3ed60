"""data/dsn.toml (the reporting MTA's own wording) is a table like the others: shipped, then
overridden item by item from /etc/mailwarden/dsn.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden.errors import TableError
from mailwarden.sources.dsn import parse_bounce
from mailwarden.sources.dsn.parser import wordings

BOUNCE = b"""From: MAILER-DAEMON@mail.example.net
To: s@example.net
Subject: failure notice

Hi. This is the qmail-send program at mail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.

<a@example.org>:
Our frobnicator refused the message. (#5.0.0)

--- Below this line is a copy of the message.
"""


def test_shipped_wording_decides_the_reporting_mtas_own_words() -> None:
    data = BOUNCE.replace(
        b"Our frobnicator refused the message.", b"Sorry, no mailbox here by that name."
    )
    [r] = parse_bounce(data).recipients
    assert r.reason == "userunknown"


def test_local_table_adds_and_disables_items(etc: Path) -> None:
    (etc / "dsn.toml").write_text(
        """
[[wording]]
id = "local/frobnicator"
reason = "contenterror"
pattern = 'frobnicator refused'

[[wording]]
id = "qmail/no-mailbox"
enabled = false
"""
    )
    [r] = parse_bounce(BOUNCE).recipients
    assert r.reason == "contenterror"
    ids = [w.id for w in wordings()]
    assert "local/frobnicator" in ids and "qmail/no-mailbox" not in ids
    assert "qmail/no-host" in ids  # shipped items not named stay


def test_bad_pattern_names_the_item(etc: Path) -> None:
    (etc / "dsn.toml").write_text(
        '[[wording]]\nid = "broken"\nreason = "expired"\npattern = "(("\n'
    )
    with pytest.raises(TableError, match="broken"):
        parse_bounce(BOUNCE)
