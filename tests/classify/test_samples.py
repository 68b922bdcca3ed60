"""Every pattern in every shipped table carries real samples, and every sample gets its expected
verdict through the whole classifier (not just its own regex): a shadowed or dead rule fails."""

from __future__ import annotations

import pytest

from mailwarden.classify import Classifier
from mailwarden.classify.samples import Owned, check, owned_patterns

CLASSIFIER = Classifier.load()
OWNED = list(owned_patterns(CLASSIFIER))
CASES = [(o, i) for o in OWNED for i in range(len(o.samples))]


def test_every_pattern_has_a_sample() -> None:
    bare = [o.id for o in OWNED if not o.samples]
    assert bare == [], f"patterns without samples: {bare}"


def test_there_are_many_patterns_and_samples() -> None:
    assert len(OWNED) >= 100
    assert len(CASES) >= 250


@pytest.mark.parametrize(("owner", "index"), CASES, ids=[f"{o.id}#{i}" for o, i in CASES])
def test_sample_gets_its_verdict(owner: Owned, index: int) -> None:
    sample = owner.samples[index]
    diff = check(CLASSIFIER, owner, sample)
    assert diff == {}, f"{sample.reply!r}: {{field: (expected, got)}} = {diff}"


ANYWHERE = [(o, i) for o, i in CASES if o.anywhere and not o.samples[i].host]


@pytest.mark.parametrize(("owner", "index"), ANYWHERE, ids=[f"{o.id}#{i}" for o, i in ANYWHERE])
def test_distinctive_pattern_decides_for_unknown_relays(owner: Owned, index: int) -> None:
    """``anywhere`` patterns (provider codes) decide even when the relay host is unknown."""
    sample = owner.samples[index]
    diff = check(CLASSIFIER, owner, sample, unknown_provider=True)
    assert diff == {}, f"{sample.reply!r}: {{field: (expected, got)}} = {diff}"


def test_every_pattern_decides_at_least_one_of_its_samples() -> None:
    """A pattern whose samples are all won by other rules is dead (KumoMTA's lesson)."""
    from mailwarden.classify.samples import run_sample

    dead = []
    for o in OWNED:
        rules = {run_sample(CLASSIFIER, o, s).rule for s in o.samples}
        if o.table == "remap":
            if not any(r.endswith("+" + o.id) for r in rules):
                dead.append(o.id)
        elif o.id not in rules and o.table != "issuers":
            dead.append(o.id)
    assert dead == [], f"patterns that never decide their own samples: {dead}"


def test_every_issuer_is_found_in_one_of_its_samples() -> None:
    from mailwarden.classify.samples import run_sample

    missing = [
        o.id
        for o in OWNED
        if o.table == "issuers"
        and o.issuer not in {run_sample(CLASSIFIER, o, s).issuer for s in o.samples}
    ]
    assert missing == []
