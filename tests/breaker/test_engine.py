"""The engine with the real log parser, the real classifier and a real SQLite store: log lines in,
states stored, the socketmap view published, hooks and alerts driven."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailwarden.breaker.engine import Engine
from mailwarden.breaker.machine import Machine
from mailwarden.breaker.replay import replay_files
from mailwarden.breaker.rules import RuleSet
from mailwarden.classify import Classifier
from mailwarden.events import Delivery
from mailwarden.postfix.socketmap import EnforcementView, write_view
from mailwarden.sources import Envelope, parse_lines
from mailwarden.store.breaker import BreakerStore
from mailwarden.store.db import open_engine

DATA = Path(__file__).resolve().parent.parent / "data" / "breaker"
RULES = RuleSet.load(etc=Path("/nonexistent"))
CLASSIFIER = Classifier.load()

SWISS_BLOCK = (
    "Nov 27 17:19:54 mail postfix/smtp[11683]: 394D3162231: to=<bob@bluewin.ch>, "
    "relay=mx01.swisscom.ch[192.0.2.2]:25, delay=0.09, delays=0.03/0.02/0.01/0.03, dsn=5.7.1, "
    "status=bounced (host mx01.swisscom.ch[192.0.2.2] said: 554 5.7.1 Swisscom AG IP: "
    "198.51.100.7, You are not allowed to send us mail. Please refer to "
    "https://postmaster.bluewin.ch if you feel this is in error. (in reply to RCPT TO command))"
)
SWISS_SENT = (
    "Nov 27 {t} mail postfix/smtp[11683]: 4E6A5162237: to=<carol@bluewin.ch>, "
    "relay=mx01.swisscom.ch[192.0.2.2]:25, delay=0.07, delays=0.01/0.04/0.01/0.01, dsn=2.0.0, "
    "status=sent (250 2.0.0 Ok: queued as QUBP5QNK2KLD)"
)
SWISS_UNKNOWN = (
    "Nov 27 17:19:55 mail postfix/smtp[11686]: 5D286162232: to=<nouser1@bluewin.ch>, "
    "relay=mx01.swisscom.ch[192.0.2.2]:25, delay=0.03, delays=0.02/0/0.01/0.01, dsn=5.1.1, "
    "status=bounced (host mx01.swisscom.ch[192.0.2.2] said: 550 5.1.1 <nouser1@bluewin.ch>: "
    "Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO "
    "command))"
)
OUR_DEFERRAL = (
    "Nov 27 17:20:00 mail postfix/error[16046]: 98C98162244: to=<u1@bluewin.ch>, relay=none, "
    "delay=0.06, delays=0.03/0.01/0/0.02, dsn=4.7.1, status=deferred (circuit open for provider "
    "swisscom: our IP is blocked)"
)


def deliveries(*lines: str) -> list[Delivery]:
    raw = [(ln + "\n").encode() for ln in lines]
    return [e for e in parse_lines(raw, env=Envelope(source="t")) if isinstance(e, Delivery)]


class Recorder:
    """Records hook calls (the real Postfix hooks are exercised end to end)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def opened(self, provider: str, *, first: bool = True) -> None:
        self.calls.append(("opened", provider))

    def probing(self, provider: str, recipients: int) -> None:
        self.calls.append(("probing", provider))

    def closed(self, provider: str, rate_per_minute: float) -> None:
        self.calls.append(("closed", provider))


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    db = open_engine(f"sqlite:///{tmp_path / 'mw.db'}")
    store = BreakerStore(db, "mx1")
    view = tmp_path / "view.json"
    sent: list[Any] = []
    rec = Recorder()

    def make() -> Engine:
        e = Engine(
            rules=RULES,
            classifier=CLASSIFIER,
            machine=Machine(RULES, probe_recipients=2, probe_timeout=60),
            store=store,
            publisher=lambda v, n: write_view(view, v, n),
            hooks=rec,
            notify=sent.extend,
            never_park=["postmaster@example.org"],
        )
        e.load()
        return e

    return {"make": make, "view": view, "sent": sent, "hooks": rec, "store": store}


def test_block_reply_opens_parks_probes_and_a_probe_success_closes(world: dict[str, Any]) -> None:
    eng = world["make"]()
    [block] = deliveries(SWISS_BLOCK)
    obs = eng.observe(block)
    assert obs is not None and obs.provider == "swisscom"
    assert [t.new for t in obs.transitions] == ["open"]
    view = EnforcementView.load(world["view"])
    entry = view.providers["swisscom"]
    assert entry.state == "open"
    assert entry.answer.startswith("retry:4.7.1 circuit open for provider swisscom: ")
    assert "postmaster@example.org" in view.never_park
    assert world["hooks"].calls == [("opened", "swisscom")]
    assert world["sent"][0].new == "open"
    # recipient-level bounce and our own deferral: ignored
    for d in deliveries(SWISS_UNKNOWN, OUR_DEFERRAL):
        o = eng.observe(d)
        assert o is None or o.transitions == []
    # an in-flight success while open does not close
    [ok] = deliveries(SWISS_SENT.format(t="17:20:10"))
    assert eng.observe(ok).transitions == []  # type: ignore[union-attr]
    until = eng.machine.get("swisscom").until
    assert until is not None
    [p] = eng.tick(until)
    assert p.new == "probing"
    probing = EnforcementView.load(world["view"]).providers["swisscom"]
    assert (probing.state, probing.probe_round, probing.probe_recipients) == ("probing", 1, 2)
    assert ("probing", "swisscom") in world["hooks"].calls
    [later] = deliveries(SWISS_SENT.format(t="19:30:00"))
    [c] = eng.observe(later).transitions  # type: ignore[union-attr]
    assert c.new == "closed" and c.actor == "probe"
    assert EnforcementView.load(world["view"]).providers == {}
    assert world["hooks"].calls[-1] == ("closed", "swisscom")
    hist = world["store"].history("swisscom")
    assert [h["new"] for h in hist] == ["closed", "probing", "open"]


def test_state_survives_a_restart_and_cli_changes_are_picked_up(world: dict[str, Any]) -> None:
    first = world["make"]()
    first.observe(deliveries(SWISS_BLOCK)[0])
    second = world["make"]()  # a new process
    st = second.machine.get("swisscom")
    assert st.state == "open" and st.rule == "swisscom/not-allowed"
    assert st.reply.startswith("554 5.7.1 Swisscom AG")
    cli = world["make"]()
    cli.close("swisscom", note="delisted")
    assert first.refresh() is True
    assert first.machine.get("swisscom").state == "closed"
    assert first.refresh() is False
    assert json.loads(world["view"].read_text())["providers"] == {}


def test_person_open_for_a_time_with_a_reason(world: dict[str, Any]) -> None:
    eng = world["make"]()
    t = eng.open("gmx", duration=3600, note="maintenance window", now=1000.0)
    assert t.until == 4600 and t.actor == "person"
    entry = EnforcementView.load(world["view"]).providers["gmx"]
    assert entry.answer == "retry:4.7.1 circuit open for provider gmx: maintenance window"


def test_disabled_breaker_records_but_publishes_nothing(world: dict[str, Any]) -> None:
    eng = world["make"]()
    eng.enabled = False
    eng.observe(deliveries(SWISS_BLOCK)[0])
    assert eng.machine.get("swisscom").state == "open"
    assert EnforcementView.load(world["view"]).providers == {}
    assert world["hooks"].calls == []


def test_slowed_is_enforced_only_when_the_clone_is_installed(world: dict[str, Any]) -> None:
    eng = world["make"]()
    ts02 = (
        "Nov 27 17:30:00 mail postfix/smtp[1]: 1A2B3C4D5E: to=<a@yahoo.com>, "
        "relay=mta5.am0.yahoodns.net[192.0.2.5]:25, delay=1, delays=0/0/0/1, dsn=4.7.0, "
        "status=deferred (host mta5.am0.yahoodns.net[192.0.2.5] said: 421 4.7.0 [TS02] Messages "
        "from 198.51.100.7 temporarily deferred due to user complaints - 4.16.55.1; see "
        "https://postmaster.yahooinc.com/error-codes (in reply to RCPT TO command))"
    )
    [t] = eng.observe(deliveries(ts02)[0]).transitions  # type: ignore[union-attr]
    assert t.new == "slowed"
    assert EnforcementView.load(world["view"]).providers == {}  # no clone installed: fail open
    eng.installed_clones = lambda: {"mwslow60s1"}
    eng.publish()
    assert EnforcementView.load(world["view"]).providers["yahoo"].transport == "mwslow60s1"


def test_per_ip_breakers_park_only_when_every_ip_is_blocked(world: dict[str, Any]) -> None:
    eng = world["make"]()
    eng.our_ips = frozenset({"198.51.100.7", "198.51.100.8"})
    eng.observe(deliveries(SWISS_BLOCK)[0])  # cites 198.51.100.7
    assert eng.machine.get("swisscom", "198.51.100.7").state == "open"
    assert EnforcementView.load(world["view"]).providers == {}  # .8 still gets through
    eng.observe(deliveries(SWISS_BLOCK.replace("198.51.100.7", "198.51.100.8"))[0])
    assert EnforcementView.load(world["view"]).providers["swisscom"].state == "open"


def test_replay_of_the_recorded_log() -> None:
    res = replay_files([DATA / "sample.log"], rules=RULES, classifier=CLASSIFIER)
    doc = res.to_json()
    trips = {(t["provider"], t["rule"]) for t in doc["trips"]}
    # The recorded receivers use .test MX names: unknown providers, caught by the default rule.
    assert ("swisscom.test", "default/blocked-ours") in trips
    assert ("greetblock.test", "default/blocked-ours") in trips
    assert all(t["to"] in ("open", "slowed") for t in doc["trips"])
    assert "swisscom/not-allowed" in doc["never_matched"]
    assert "default/blocked-ours" not in doc["never_matched"]
    assert res.deliveries > 20
    # accept.test bounced recipients (user unknown) must not trip anything
    assert not any(t["provider"] == "accept.test" for t in doc["trips"])


def test_replay_trips_on_a_block_at_a_non_final_mx(tmp_path: Path) -> None:
    """The first MX refuses at the greeting, the backup accepts: the only block is the line
    smtp logs before moving on, and it trips the provider."""
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov 27 10:00:00 mail postfix/smtp[100]: 4F70216A723: host mx00.emig.gmx.net"
        "[198.51.100.5] refused to talk to me: 554-gmx.net (mxgmx117) Nemesis ESMTP Service "
        "not available 554-No SMTP service 554-IP address is block listed. 554 For explanation"
        " visit https://postmaster.gmx.net/en/case?c=r0201&i=ip&v=203.0.113.25&r=1ABC\n"
        "Nov 27 10:00:01 mail postfix/smtp[100]: 4F70216A723: to=<anna@gmx.net>, "
        "relay=mx01.emig.gmx.net[198.51.100.6]:25, delay=1.2, delays=0.1/0/0.6/0.5, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 1234)\n"
    )
    res = replay_files([log], rules=RULES, classifier=CLASSIFIER)
    assert [(t["provider"], t["rule"]) for t in res.to_json()["trips"]] == [
        ("gmx", "gmx/ip-block-listed")
    ]
