"""Rule files: every shipped rule fires on the real reply it was written for, and the matching
semantics (first match wins, recipient/internal replies never match) hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden.breaker.rules import (
    MANUAL,
    RuleSet,
    Trigger,
    format_duration,
    parse_duration,
    reply_line,
)
from mailwarden.errors import TableError
from mailwarden.events import Classification

from .conftest import classification, reply_from_text

SHIPPED = RuleSet.load(etc=Path("/nonexistent"))
SAMPLES = [
    pytest.param(rule, sample, id=f"{rule.id}#{i}")
    for rule in SHIPPED.rules
    for i, sample in enumerate(rule.samples)
]


def _cls_for(sample_reason: str, scope: str, issuer: str) -> Classification | None:
    if not (sample_reason or scope or issuer):
        return None
    return classification(sample_reason or "blocked", scope or "ours", issuer)


@pytest.mark.parametrize(("rule", "sample"), SAMPLES)
def test_every_shipped_sample_fires_its_own_rule(rule, sample) -> None:  # type: ignore[no-untyped-def]
    provider = sample.provider or (rule.provider if rule.provider != "*" else "example.org")
    reply = reply_from_text(sample.reply, sample.command)
    m = SHIPPED.match(provider, reply, _cls_for(sample.reason, sample.scope, sample.issuer))
    if sample.fires:
        assert m is not None, f"{rule.id} does not match its sample {sample.reply!r}"
        assert m.rule.id == rule.id, f"sample of {rule.id} is taken by {m.rule.id} first"
        if sample.issuer:
            assert m.issuer == sample.issuer
    else:
        assert m is None or m.rule.id != rule.id


def test_every_rule_has_a_sample_and_the_set_is_not_empty() -> None:
    assert len(SHIPPED.rules) >= 10
    assert all(r.samples for r in SHIPPED.rules)
    providers = {r.provider for r in SHIPPED.rules}
    assert {"*", "swisscom", "yahoo", "google", "outlook"} <= providers


def test_every_provider_named_by_a_rule_is_one_the_classifier_knows() -> None:
    """A rule for a provider name the classifier never returns can never fire (KumoMTA's
    nameless 'gmail' block, breaker.md 1.6)."""
    from mailwarden.classify import Classifier

    c = Classifier.load()
    named = {p for r in SHIPPED.rules for p in r.providers if p != "*"}
    unknown = sorted(p for p in named if not c.is_known_provider(p))
    assert unknown == []


def test_provider_rules_fire_with_the_real_classifier() -> None:
    """Each provider rule's sample, classified by the real classifier, still fires the rule
    (the classifier must not call these replies recipient-level or internal)."""
    from mailwarden.classify import Classifier

    c = Classifier.load()
    bad = []
    for rule in SHIPPED.rules:
        if "*" in rule.providers:
            continue
        for s in rule.samples:
            if not s.fires:
                continue
            reply = reply_from_text(s.reply, s.command)
            cls = c.classify(reply, provider=rule.provider)
            m = SHIPPED.match(rule.provider, reply, cls)
            if m is None or m.rule.id != rule.id:
                bad.append((rule.id, cls.reason, cls.scope, m.rule.id if m else None))
    assert bad == []


def test_default_rules_fire_with_the_real_classifier() -> None:
    from mailwarden.classify import Classifier

    c = Classifier.load()
    bad = []
    for rule in SHIPPED.rules:
        if "*" not in rule.providers:
            continue
        for s in rule.samples:
            reply = reply_from_text(s.reply, s.command)
            prov = s.provider or "unknown-receiver.example"
            m = SHIPPED.match(prov, reply, c.classify(reply, provider=prov))
            if (m is not None and m.rule.id == rule.id) != s.fires:
                bad.append((rule.id, s.reply[:60], m.rule.id if m else None))
    assert bad == []


def test_provider_rules_do_not_apply_to_other_providers() -> None:
    swiss = reply_from_text(
        "554 5.7.1 Swisscom AG IP: 192.0.2.1, You are not allowed to send us mail."
    )
    # Another provider with the same words: only the default rule, and only with a verdict.
    assert SHIPPED.match("gmx", swiss, None) is None
    m = SHIPPED.match("gmx", swiss, classification("blocked", "ours"))
    assert m is not None and m.rule.id == "default/blocked-ours"


def test_recipient_and_internal_replies_never_match() -> None:
    swiss = reply_from_text("554 5.7.1 You are not allowed to send us mail.")
    assert SHIPPED.match("swisscom", swiss, classification("userunknown", "recipient")) is None
    assert (
        SHIPPED.match("swisscom", swiss, classification("blocked", "ours", internal=True)) is None
    )
    local = reply_from_text("554 5.7.1 You are not allowed to send us mail.", remote=False)
    assert SHIPPED.match("swisscom", local, None) is None


def test_unknown_provider_is_covered_by_the_default_rule() -> None:
    r = reply_from_text("550 5.7.1 Go away, your IP has a poor reputation")
    m = SHIPPED.match("never-heard-of.example", r, classification("badreputation", "ours"))
    assert m is not None and m.rule.id == "default/blocked-ours"
    assert (
        SHIPPED.match("never-heard-of.example", r, classification("blocked", "transient")) is None
    )


def test_issuer_recorded_from_classification() -> None:
    r = reply_from_text("554 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org")
    m = SHIPPED.match("anyone.example", r, classification("blocked", "ours", issuer="spamhaus"))
    assert m is not None and m.rule.id == "default/blocklist" and m.issuer == "spamhaus"


def test_reply_line_joins_present_parts() -> None:
    assert reply_line(reply_from_text("554 5.7.1 no")) == "554 5.7.1 no"
    assert reply_line(reply_from_text("554 IP=1.2.3.4 - A problem")) == "554 IP=1.2.3.4 - A problem"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1.5h", 5400), ("45", 45)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_manual_and_errors() -> None:
    assert parse_duration("manual") == MANUAL
    with pytest.raises(ValueError):
        parse_duration("2 fortnights")
    assert format_duration(5400) == "1h30m" and format_duration(MANUAL) == "manual"


def test_trigger_parse() -> None:
    assert Trigger.parse("immediate").immediate
    t = Trigger.parse("3/1h")
    assert (t.count, t.window, str(t)) == (3, 3600.0, "3/1h")
    for bad in ("3", "x/1h", "0/1h", "3/manual"):
        with pytest.raises(ValueError):
            Trigger.parse(bad)


def test_escalation_is_capped() -> None:
    r = SHIPPED.get("swisscom/not-allowed")
    assert r is not None
    assert [r.duration_for(n) for n in (1, 2, 3)] == [7200, 14400, 28800]
    assert r.duration_for(20) == parse_duration("2d")
    dnr = SHIPPED.get("yahoo/do-not-retry")
    assert dnr is not None and dnr.manual and dnr.duration_for(1) == MANUAL


def _write(etc: Path, name: str, text: str) -> None:
    (etc / "breaker").mkdir(exist_ok=True)
    (etc / "breaker" / name).write_text(text)


LOCAL = """
provider = "swisscom"
[[rule]]
id = "swisscom/local"
pattern = "go away"
duration = "10m"
  [[rule.sample]]
  reply = "554 go away"
"""


def test_local_file_replaces_shipped_file_of_same_name(etc: Path) -> None:
    _write(etc, "swisscom.toml", LOCAL)
    rs = RuleSet.load()
    assert rs.get("swisscom/not-allowed") is None
    assert rs.get("swisscom/local") is not None
    assert rs.get("yahoo/tss04") is not None  # others untouched


def test_local_new_file_adds_rules(etc: Path) -> None:
    _write(etc, "local.toml", LOCAL.replace("swisscom/local", "swisscom/extra"))
    rs = RuleSet.load()
    assert rs.get("swisscom/not-allowed") is not None and rs.get("swisscom/extra") is not None


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ('pattern = "(unclosed"', "does not compile"),
        ('reasons = ["nonsense"]', "unknown reasons"),
        ('duration = "soon"', "bad duration"),
        ('trigger = "often"', "bad trigger"),
        ('reason = "bad\\nnewline"', "reason text"),
        ('colour = "red"', "Extra inputs"),
    ],
)
def test_bad_rule_file_is_a_clear_error_naming_the_file(etc: Path, bad: str, why: str) -> None:
    key = bad.split(" ")[0]
    base = [ln for ln in LOCAL.splitlines() if not ln.startswith(f"{key} ")]
    at = base.index('id = "swisscom/local"') + 1
    _write(etc, "broken.toml", "\n".join([*base[:at], bad, *base[at:]]))
    with pytest.raises(TableError, match=r"broken\.toml") as ei:
        RuleSet.load()
    assert why in str(ei.value)


def test_rule_without_sample_is_refused(etc: Path) -> None:
    _write(etc, "nosample.toml", 'provider = "x"\n[[rule]]\nid = "x/y"\npattern = "a"\n')
    with pytest.raises(TableError, match="sample"):
        RuleSet.load()


def test_duplicate_rule_ids_are_refused(etc: Path) -> None:
    _write(etc, "dup.toml", LOCAL.replace("swisscom/local", "yahoo/tss04"))
    with pytest.raises(TableError, match="duplicate rule id"):
        RuleSet.load()


def test_status_filter_only_for_immediate_open_pattern_rules() -> None:
    ids = {r.id for r in SHIPPED.status_filter_rules()}
    assert "swisscom/not-allowed" in ids
    assert "google/likely-unsolicited" not in ids  # threshold rule: a single verdict must bounce
    assert "default/blocked-ours" not in ids  # no pattern to put in a filter
    assert all(r.action == "open" for r in SHIPPED.status_filter_rules())


def test_slow_specs_are_distinct_transports() -> None:
    names = [s.transport for s in SHIPPED.slow_specs()]
    assert names == sorted(set(names)) and all(n.startswith("mwslow") for n in names)


# ------------------------------------------------------------- issuers: one table, no copies


def test_rules_name_only_issuers_the_classifier_knows() -> None:
    """Issuer ids in rule files (``issuers``, ``not_issuers``, ``issuer``) are ids of the
    classifier's issuers.toml: no stale or misspelt copy can silently never match."""
    from mailwarden.classify import Classifier

    known = set(Classifier.load().issuers)
    named = {
        (r.id, i)
        for r in SHIPPED.rules
        for i in (*r.issuers, *r.not_issuers, *([r.issuer] if r.issuer else []))
        if i != "*"
    }
    assert {(rid, i) for rid, i in named if i not in known} == set()


def test_every_issuer_the_classifier_knows_opens_the_blocklist_rule() -> None:
    """The default blocklist rule is derived from the classifier's issuer table: each issuer's
    own sample replies (classified for an unknown receiver) open ``default/blocklist``, except
    the providers' own systems in ``not_issuers``. Adding an issuer to issuers.toml needs no
    edit of the breaker rules for this to hold."""
    from mailwarden.classify import Classifier

    c = Classifier.load()
    rule = SHIPPED.get("default/blocklist")
    assert rule is not None and "*" in rule.issuers
    fired: set[str] = set()
    for iss in c.issuers.values():
        for s in iss.samples:
            reply = reply_from_text(s.reply, s.command or "RCPT TO")
            cls = c.classify(reply, provider="unknown-receiver.example")
            if cls.issuer != iss.id or cls.scope != "ours" or cls.reason not in rule.reasons:
                continue  # a sample about the issuer's wording, not a listing of ours
            m = SHIPPED.match("unknown-receiver.example", reply, cls)
            if iss.id in rule.not_issuers:
                assert m is None or m.rule.id != rule.id, (iss.id, s.reply)
            else:
                assert m is not None and m.rule.id == rule.id, (iss.id, s.reply)
                assert m.issuer == iss.id
                fired.add(iss.id)
    # every issuer of the table has a listing sample, and every one but the excluded fires
    assert fired == set(c.issuers) - rule.not_issuers
    assert {"trendmicro", "invaluement", "dronebl", "blocklist-de"} <= fired


def test_a_local_issuer_is_covered_without_touching_the_rules(etc: Path) -> None:
    """/etc/mailwarden/issuers.toml adds a list: the shipped rule opens on it as it is."""
    from mailwarden.classify import Classifier

    (etc / "issuers.toml").write_text(
        '[[issuer]]\nid = "examplebl"\nname = "Example BL"\nmatch = [\'examplebl\\.test\']\n'
    )
    c = Classifier.load()
    reply = reply_from_text(
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using bl.examplebl.test"
    )
    cls = c.classify(reply, provider="unknown-receiver.example")
    assert cls.issuer == "examplebl" and cls.scope == "ours"
    m = RuleSet.load().match("unknown-receiver.example", reply, cls)
    assert m is not None and m.rule.id == "default/blocklist" and m.issuer == "examplebl"


def test_not_issuers_excludes_a_providers_own_system() -> None:
    r = reply_from_text("550 5.7.606 Access denied, banned sending IP [192.0.2.1].")
    m = SHIPPED.match("unknown.example", r, classification("blocked", "ours", issuer="microsoft"))
    assert m is not None and m.rule.id == "default/blocked-ours"  # not the blocklist rule
