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
