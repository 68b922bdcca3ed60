"""The state machine: trips, probes, escalation, manual holds, slow-downs, trigger windows."""

from __future__ import annotations

from pathlib import Path

from mailwarden.breaker.machine import Machine
from mailwarden.breaker.rules import RuleSet

from .conftest import classification, reply_from_text

RULES = RuleSet.load(etc=Path("/nonexistent"))
SWISS = reply_from_text(
    "554 5.7.1 Swisscom AG IP: 192.0.2.1, You are not allowed to send us mail. Please refer to "
    "http://example.invalid/block if you feel this is in error."
)
TSS04 = reply_from_text("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred")
TS03 = reply_from_text("421 4.7.1 [TS03] All messages from 192.0.2.1 permanently deferred")
TS02 = reply_from_text("421 4.7.0 [TS02] Messages from 192.0.2.1 temporarily deferred")
GSPAM = reply_from_text(
    "550 5.7.1 Our system has detected that this message is likely unsolicited mail."
)


def feed(m: Machine, ts: float, provider: str, reply, cls=None):  # type: ignore[no-untyped-def]
    match = m.rules.match(provider, reply, cls)
    return [] if match is None else m.observe_match(ts, provider, "", match)


def test_one_block_reply_opens_then_probe_success_closes() -> None:
    m = Machine(RULES)
    [t] = feed(m, 1000.0, "swisscom", SWISS)
    assert (t.old, t.new, t.rule, t.until) == (
        "closed",
        "open",
        "swisscom/not-allowed",
        1000 + 7200,
    )
    st = m.get("swisscom")
    assert st.reply.startswith("554 5.7.1 Swisscom AG") and st.reason == "our IP is blocked"
    # In-flight replies and successes while open change nothing.
    assert feed(m, 1001.0, "swisscom", SWISS) == []
    assert m.observe_success(1002.0, "swisscom") == []
    assert m.tick(1000 + 7199) == []
    [p] = m.tick(1000 + 7200)
    assert (p.old, p.new) == ("open", "probing") and st.probe_round == 1
    [c] = m.observe_success(1000 + 7300, "swisscom")
    assert (c.old, c.new, c.actor) == ("probing", "closed", "probe")


def test_failed_probe_reopens_longer_up_to_the_cap() -> None:
    m = Machine(RULES)
    feed(m, 0.0, "swisscom", SWISS)
    durations = []
    now = 0.0
    for _ in range(8):
        st = m.get("swisscom")
        assert st.until is not None
        now = st.until
        m.tick(now)
        [t] = feed(m, now + 1, "swisscom", SWISS)
        assert (t.old, t.new) == ("probing", "open")
        assert t.until is not None
        durations.append(t.until - (now + 1))
    assert durations[:3] == [14400, 28800, 57600]
    assert max(durations) == 2 * 86400  # max_duration = 2d


def test_do_not_retry_reply_stays_open_until_a_person_closes() -> None:
    m = Machine(RULES)
    [t] = feed(m, 0.0, "yahoo", TS03)
    assert t.new == "open" and t.until is None and m.get("yahoo").manual
    assert m.tick(10 * 86400) == []
    c = m.close(10 * 86400, "yahoo", note="delisted")
    assert (c.new, c.actor) == ("closed", "person")


def test_do_not_retry_while_open_pins_it_open() -> None:
    m = Machine(RULES)
    feed(m, 0.0, "yahoo", TSS04)
    assert m.get("yahoo").until == 7200
    [t] = feed(m, 5.0, "yahoo", TS03)
    assert (t.old, t.new, t.until, t.rule) == ("open", "open", None, "yahoo/do-not-retry")


def test_recipient_level_replies_never_trip_or_reset() -> None:
    m = Machine(RULES)
    unknown = reply_from_text("550 5.1.1 <x@bluewin.ch>: Recipient address rejected: User unknown")
    for i in range(20):
        assert (
            feed(m, float(i), "swisscom", unknown, classification("userunknown", "recipient")) == []
        )
    feed(m, 100.0, "swisscom", SWISS)
    m.tick(100 + 7200)
    # A recipient-level bounce during probing neither closes nor re-opens it.
    assert feed(m, 7301.0, "swisscom", unknown, classification("userunknown", "recipient")) == []
    assert m.get("swisscom").state == "probing"


def test_threshold_trigger_counts_within_its_window_only() -> None:
    m = Machine(RULES)  # google/likely-unsolicited: 3/1h
    assert feed(m, 0.0, "google", GSPAM) == []
    assert feed(m, 1800.0, "google", GSPAM) == []
    assert feed(m, 3700.0, "google", GSPAM) == []  # the first one fell out of the window
    [t] = feed(m, 3750.0, "google", GSPAM)
    assert t.new == "open" and t.rule == "google/likely-unsolicited"


def test_slow_rule_slows_then_expires_and_block_upgrades_to_open() -> None:
    m = Machine(RULES)
    [t] = feed(m, 0.0, "yahoo", TS02)
    st = m.get("yahoo")
    assert t.new == "slowed" and st.slow_transport == "mwslow60s1" and t.until == 3600
    assert feed(m, 100.0, "yahoo", TS02) == []  # still throttled: extends, no new alert
    assert st.until == 3700
    [c] = m.tick(3700.0)
    assert (c.old, c.new) == ("slowed", "closed") and st.slow_transport == ""
    feed(m, 4000.0, "yahoo", TS02)
    [o] = feed(m, 4001.0, "yahoo", TSS04)
    assert (o.old, o.new) == ("slowed", "open") and st.slow_transport == ""


def test_escalation_memory_after_a_recent_close() -> None:
    m = Machine(RULES, escalation_memory=3600)
    feed(m, 0.0, "swisscom", SWISS)
    m.tick(7200.0)
    m.observe_success(7201.0, "swisscom")
    [t] = feed(m, 8000.0, "swisscom", SWISS)  # 13 min after closing: level 2
    assert t.level == 2 and t.until == 8000 + 14400
    m.tick(8000 + 14400)
    m.observe_success(8000 + 14401, "swisscom")
    [t2] = feed(m, 8000 + 14401 + 7200, "swisscom", SWISS)  # 2 h later: fresh start
    assert t2.level == 1


def test_stale_probe_round_restarts() -> None:
    m = Machine(RULES, probe_timeout=60)
    feed(m, 0.0, "swisscom", SWISS)
    m.tick(7200.0)
    assert m.get("swisscom").probe_round == 1
    assert m.tick(7259.0) == [] and m.get("swisscom").probe_round == 1
    assert m.tick(7260.0) == [] and m.get("swisscom").probe_round == 2


def test_person_opens_for_a_time_and_success_before_probe_is_ignored() -> None:
    m = Machine(RULES)
    t = m.open(0.0, "gmx", duration=600, note="maintenance", reason="circuit open for provider gmx")
    assert (t.new, t.actor, t.until, t.note) == ("open", "person", 600, "maintenance")
    [p] = m.tick(600.0)
    assert p.new == "probing"
    assert m.observe_success(598.0, "gmx") == []  # delivered before probing began
    [c] = m.observe_success(601.0, "gmx")
    assert c.new == "closed"


def test_keys_are_per_provider_and_ip() -> None:
    m = Machine(RULES)
    match = RULES.match("swisscom", SWISS, None)
    assert match is not None
    m.observe_match(0.0, "swisscom", "192.0.2.1", match)
    assert m.get("swisscom", "192.0.2.1").state == "open"
    assert m.get("swisscom", "192.0.2.2").state == "closed"
    assert m.next_deadline() == 7200
