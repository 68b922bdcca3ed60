"""The bundled sample log is the spine scenario's real log, cleaned, and still agrees with it."""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path

from fixtures.mail import TEST_USER
from fixtures.postfix import STATUS_RX, PostfixInstance
from fixtures.slot import Slot

from . import scenario as sc
from .sample import APP_UID, OUR_IP, sanitize

SYSLOG_RX = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d mail postfix/[\w/-]+\[\d+\]: \S.*$")


def _sample() -> list[str]:
    ref = resources.files("mailwarden") / "data" / "samples" / "postfix-sample.log"
    return ref.read_text().splitlines()


def test_sample_is_small_and_every_line_is_postfix_syslog() -> None:
    lines = _sample()
    assert 100 < len(lines) < 2000
    bad = [line for line in lines if not SYSLOG_RX.match(line)]
    assert bad == []


def test_sample_holds_nothing_machine_specific() -> None:
    text = "\n".join(_sample())
    assert not re.search(r"\b127\.\d+\.\d+\.\d+\b", text)
    assert "mwtest" not in text and "/tmp/" not in text
    assert f"Swisscom AG IP: {OUR_IP}," in text


def test_sample_agrees_with_the_scenario() -> None:
    """Every recipient in the sample ends as the scenario says: regenerate the sample (see
    tests/e2e/sample.py) whenever the scenario changes."""
    final: dict[tuple[str, str], str] = {}
    for line in _sample():
        if m := STATUS_RX.search(line):
            final[(m["qid"], m["rcpt"])] = m["status"]
    by_rcpt: dict[str, set[str]] = {}
    for (_, rcpt), status in final.items():
        by_rcpt.setdefault(rcpt, set()).add(status)
    assert by_rcpt.pop(sc.BOUNCES) == {"sent"}  # bounce notices reach our own MX
    assert set(by_rcpt) == set(sc.BY_ADDRESS)
    assert all(by_rcpt[a] == {sc.BY_ADDRESS[a].fate} for a in by_rcpt)
    text = "\n".join(_sample())
    origins = Counter(re.findall(r"postfix/pickup\[\d+\]: \w+: uid=(\d+) ", text))
    subs = sc.plan_submissions()
    assert origins == Counter(
        {
            "33": sum(1 for s in subs if s.user == "www-data"),
            str(APP_UID): sum(1 for s in subs if s.user == TEST_USER),
        }
    )
    assert len(re.findall(r": client=app1\.example\.test\[192\.0\.2\.\d+\]$", text, re.M)) == sum(
        1 for s in subs if s.via == "smtp"
    )


def test_sanitize_maps_the_slot_block_to_documentation_space() -> None:
    slot = Slot(7)
    pf = PostfixInstance(
        name="mwtest7",
        config_dir=Path("/etc/postfix-mwtest7"),
        queue_dir=Path("/var/spool/postfix-mwtest7"),
        data_dir=Path("/var/lib/postfix-mwtest7"),
        address=slot.postfix_address,
        log_path=Path("/dev/null"),
        nameserver="127.0.53.1",
    )
    raw = (
        "a relay=mx[127.77.7.10]:25 IP: 127.77.7.1, client=app[127.77.7.200] "
        "keep 127.77.70.1 and 127.0.53.1 /etc/postfix-mwtest7 /var/spool/postfix-mwtest7/etc\n"
        "mail postfix/pickup[12]: 3F2A: uid=997 from=<x> uid=997 "
    )
    assert sanitize(raw, pf, slot, {997: 1001}) == (
        "a relay=mx[198.51.100.10]:25 IP: 203.0.113.25, client=app[192.0.2.200] "
        "keep 127.77.70.1 and 127.0.53.1 /etc/postfix /var/spool/postfix/etc\n"
        "mail postfix/pickup[12]: 3F2A: uid=1001 from=<x> uid=997 "
    )
