"""Every phrase of Sisimai's reason modules gets Sisimai's reason from the whole classifier.

The phrase lists are read from the installed Perl Sisimai (Debian ``libsisimai-perl``, version
4.25: ``/usr/share/perl5/Sisimai/Reason/*.pm``, each module's ``$index``), renamed to the v5
vocabulary (MesgTooBig and ExceedLimit are ``emailtoolarge``, TooManyConn ``ratelimited``). Each
phrase is wrapped into a reply at a stage where its reason is possible. The exceptions are
deliberate, each with its reason: v5 moved the phrase, or a provider's real reply says more.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailwarden.classify import Classifier
from mailwarden.events import Reply

SISIMAI = Path("/usr/share/perl5/Sisimai/Reason")
V5_NAMES = {
    "mesgtoobig": "emailtoolarge",
    "exceedlimit": "emailtoolarge",
    "toomanyconn": "ratelimited",
}
AFTER_DATA = {"spamdetected", "virusdetected", "contenterror", "policyviolation", "emailtoolarge"}

#: phrase -> why our verdict differs from Sisimai 4.25's module
DIFFERENT = {
    "dmarc policy": "v5 AuthFailure (a DMARC refusal is an authentication failure)",
    "email rejected due to security policies": "Mimecast's MCSpamSignature reply: virusdetected",
    "connections not accepted from servers without a valid sender domain": (
        "v5 RequirePTR (the reply goes on 'Fix reverse DNS for ...')"
    ),
    "message rejected: email address is not verified": "SES: an unverified identity, norelaying",
    "requested mail action aborted: exceeded storage allocation": (
        "also MailboxFull's phrase, which Sisimai tries first"
    ),
    "routing loop detected -- too many received: headers": "a loop: networkerror, tried first",
    "user not found": "also UserUnknown's phrase; at an unknown stage the remap makes it filtered",
}


def _phrases() -> list[tuple[str, str]]:
    out = []
    for f in sorted(SISIMAI.glob("*.pm")):
        m = re.search(r"state \$index = \[(.*?)\];", f.read_text(), re.S)
        if not m:
            continue
        # strings and comments in one left-to-right scan: a "#" inside a string stays
        for a, b in re.findall(r"#[^\n]*|'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", m.group(1)):
            phrase = (a or b).replace("\\'", "'")
            if phrase:
                out.append((V5_NAMES.get(f.stem.lower(), f.stem.lower()), phrase))
    return out


PHRASES = _phrases() if SISIMAI.is_dir() else []
C = Classifier.load()


def test_the_reference_is_installed() -> None:
    """scripts/debian-packages.txt installs libsisimai-perl: the lists must be there."""
    assert len(PHRASES) > 250, SISIMAI


@pytest.mark.parametrize(("reason", "phrase"), PHRASES, ids=[p for _, p in PHRASES])
def test_sisimai_phrase_gets_sisimai_reason(reason: str, phrase: str) -> None:
    command = "end of DATA" if reason in AFTER_DATA else "RCPT TO"
    if reason == "rejected":
        command = "MAIL FROM"
    got = C.classify(Reply(550, "", f"x {phrase} x", command=command, remote=True))
    if phrase in DIFFERENT:
        assert got.reason != reason, f"{phrase!r} now agrees: drop it from DIFFERENT"
    else:
        assert got.reason == reason, (phrase, got.rule)
