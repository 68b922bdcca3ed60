"""Every annotated line of tests/data/sources/postfix-lines.txt gives the expected result."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailwarden.sources.postfix import PostfixParser, parse_lines
from mailwarden.sources.stats import ParseStats

from .conftest import ANNOTATED, utc_env


def _cases() -> list[tuple[int, dict[str, Any], bytes]]:
    out = []
    expect: dict[str, Any] | None = None
    for no, line in enumerate(ANNOTATED.read_bytes().splitlines(keepends=True), 1):
        if line.startswith(b"# expect:"):
            expect = json.loads(line[len(b"# expect:") :])
        elif line.startswith(b"#") or not line.strip():
            continue
        else:
            assert expect is not None, f"line {no} has no expectation"
            out.append((no, expect, line))
            expect = None
    return out


CASES = _cases()


def test_every_line_has_exactly_one_expectation() -> None:
    assert len(CASES) >= 80
    body = [
        ln for ln in ANNOTATED.read_bytes().splitlines() if ln.strip() and not ln.startswith(b"#")
    ]
    assert len(body) == len(CASES)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("no", "expect", "line"), CASES, ids=[str(c[0]) for c in CASES])
def test_annotated_line(no: int, expect: dict[str, Any], line: bytes) -> None:
    stats = ParseStats()
    out = list(
        parse_lines([line], env=utc_env(), stats=stats, parser=PostfixParser(), yield_unparsed=True)
    )
    kind = expect.pop("event")
    assert stats.total == 1
    if kind == "ignored":
        assert out == [] and stats.ignored == 1, stats.as_dict()
        return
    if kind == "foreign":
        assert out == [] and stats.foreign == 1
        assert stats.programs[expect["program"]] == 1
        return
    if kind == "unparsed":
        assert len(out) == 1 and stats.unparsed == 1
        assert out[0].why == expect["why"]
        assert out[0].line == line.decode().rstrip("\n")
        return
    assert stats.parsed == 1, stats.as_dict()
    (ev,) = out
    assert type(ev).__name__ == kind
    for key, want in expect.items():
        got = _get(ev, key)
        if isinstance(want, float):
            assert got == pytest.approx(want, abs=1e-6), key
        else:
            assert got == want, f"{key}: {got!r} != {want!r}"
