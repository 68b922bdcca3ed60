"""Local tables in /etc/mailwarden (the ``etc`` fixture) change the classifier; bad tables fail
with a TableError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden.classify import Classifier
from mailwarden.errors import TableError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


LOCAL_PROVIDER = """
name = "swisscom"
display = "Swisscom (test lab)"
mx_suffixes = [".swisscom.test"]
domains = ["bluewin.test"]
postmaster_url = "https://postmaster.bluewin.ch/"

[[pattern]]
id = "lab-block"
reason = "blocked"
match = 'not allowed to send us mail'
samples = ["554 5.7.1 Swisscom AG IP: 127.0.0.1, You are not allowed to send us mail."]
"""


def test_local_provider_file_replaces_the_shipped_one(etc: Path) -> None:
    _write(etc / "providers" / "swisscom.toml", LOCAL_PROVIDER)
    c = Classifier.load()  # MAILWARDEN_ETC points at the fixture
    assert c.provider_for_host("mx01.swisscom.test") == "swisscom"
    assert c.provider_for_host("mxbw.bluewin.ch") == "bluewin.ch"  # shipped suffix gone
    assert c.provider_for_domain("bluewin.test") == "swisscom"
    cl = c.classify(None, text="554 5.7.1 You are not allowed to send us mail", provider="swisscom")
    assert cl.rule == "swisscom/lab-block"


def test_local_provider_is_added_and_explicit_etc_argument_works(tmp_path: Path) -> None:
    d = tmp_path / "other-etc"
    _write(
        d / "providers" / "labmx.toml",
        LOCAL_PROVIDER.replace('"swisscom"', '"labmx"')
        .replace(".swisscom.test", ".lab.test")
        .replace("bluewin.test", "lab-users.test"),
    )
    c = Classifier.load(etc=d)
    assert c.provider_for_host("mx.lab.test") == "labmx"
    assert c.provider_for_host("aspmx.l.google.com") == "google"  # shipped ones still there


def test_local_reasons_disable_replace_and_add_rules(etc: Path) -> None:
    _write(
        etc / "reasons.toml",
        """
[meta]
breaker_marker = "paused by mailwarden"

[[internal]]
id = "breaker"
match = '^paused by mailwarden\\b'
reason = "onhold"
samples = [{ reply = "paused by mailwarden for gmx", remote = false }]

[[rule]]
id = "mailboxfull"
enabled = false

[[rule]]
id = "local-quota"
reason = "suspend"
match = 'mailbox is full'
samples = ["552 5.2.2 mailbox is full"]
""",
    )
    c = Classifier.load()
    assert c.breaker_marker == "paused by mailwarden"
    assert c.is_internal("paused by mailwarden for gmx")
    assert not c.is_internal("circuit open for provider gmx")
    assert all(r.id != "mailboxfull" for r in c.reasons.rule)
    cl = c.classify(None, text="552 over quota and mailbox is full")
    assert (cl.reason, cl.rule) == ("suspend", "reasons/local-quota")


def test_local_issuer_is_added(etc: Path) -> None:
    _write(
        etc / "issuers.toml",
        """
[[issuer]]
id = "labrbl"
name = "Lab RBL"
match = ['rbl\\.lab\\.test']
lookup_url = "https://rbl.lab.test/?ip={ip}"
samples = [{ reply = "554 blocked using rbl.lab.test", rule = "reasons/blocked" }]
""",
    )
    c = Classifier.load()
    cl = c.classify(None, text="554 5.7.1 Client host [192.0.2.9] blocked using rbl.lab.test")
    assert (cl.issuer, cl.url) == ("labrbl", "https://rbl.lab.test/?ip=192.0.2.9")


@pytest.mark.parametrize(
    ("where", "text", "message"),
    [
        ("providers/bad.toml", 'name = "bad"\ndisplay = "x"\nmx_suffixes = []\n', "mx_suffixes"),
        (
            "providers/bad.toml",
            'name = "other"\ndisplay = "x"\nmx_suffixes = ["a.test"]\n',
            "must match the file name",
        ),
        (
            "providers/bad.toml",
            'name = "bad"\ndisplay = "x"\nmx_suffixes = ["a b"]\n',
            "bad host name suffix",
        ),
        (
            "providers/bad.toml",
            'name = "bad"\ndisplay = "x"\nmx_suffixes = ["a.test"]\n'
            '[[pattern]]\nid = "p"\nreason = "blocked"\nmatch = "(unclosed"\n',
            "bad regex",
        ),
        (
            "providers/bad.toml",
            'name = "bad"\ndisplay = "x"\nmx_suffixes = ["a.test"]\n'
            '[[pattern]]\nid = "p"\nreason = "nosuchreason"\nmatch = "x"\n',
            "unknown reason",
        ),
        (
            "providers/bad.toml",
            'name = "bad"\ndisplay = "x"\nmx_suffixes = ["a.test"]\n'
            '[[pattern]]\nid = "p"\nreason = "blocked"\nissuer = "nobody"\nmatch = "x"\n',
            "unknown issuer",
        ),
        (
            "providers/bad.toml",
            'name = "bad"\ndisplay = "x"\nmx_suffixes = ["a.test"]\n'
            '[[pattern]]\nid = "p"\nreason = "blocked"\nmatch = "x"\nsurprise = 1\n',
            "surprise",
        ),
        (
            "providers/bad.toml",
            'name = "bad"\ndisplay = "x"\nmx_suffixes = ["a.test"]\ninclude = ["ghost"]\n',
            "unknown provider 'ghost'",
        ),
        ("providers/bad.toml", "name = [\n", "bad.toml"),
        ("reasons.toml", '[[rule]]\nid = "x"\nreason = "blocked"\nmatch = "["\n', "bad regex"),
        (
            "reasons.toml",
            '[[rule]]\nid = "x"\nreason = "blocked"\nmatch = "a"\ncommands = ["RCPT"]\n',
            "unknown SMTP command",
        ),
        ("issuers.toml", '[[issuer]]\nid = "Bad Id"\nname = "x"\nmatch = "x"\n', "id"),
    ],
)
def test_bad_local_table_names_the_file(etc: Path, where: str, text: str, message: str) -> None:
    path = _write(etc / where, text)
    with pytest.raises(TableError) as err:
        Classifier.load()
    assert str(path) in str(err.value) or path.name in str(err.value)
    assert message in str(err.value)


def test_local_rule_can_go_before_a_shipped_one(etc: Path) -> None:
    text = "550 5.2.2 mailbox full (our lab calls this a suspension)"
    assert Classifier.load().classify(None, text=text).reason == "mailboxfull"
    _write(
        etc / "reasons.toml",
        """
[[rule]]
id = "lab-suspension"
reason = "suspend"
before = "mailboxfull"
match = 'our lab calls this a suspension'
samples = ["550 5.2.2 mailbox full (our lab calls this a suspension)"]
""",
    )
    cl = Classifier.load().classify(None, text=text)
    assert (cl.reason, cl.rule) == ("suspend", "reasons/lab-suspension")
    _write(
        etc / "reasons.toml",
        '[[rule]]\nid = "x"\nreason = "suspend"\nbefore = "nope"\nmatch = "x"\n',
    )
    with pytest.raises(TableError, match="names no rule"):
        Classifier.load()
