"""The correlator's open messages survive a JSON round trip: a correlator restored from a
snapshot taken mid-log emits exactly what an uninterrupted one emits; foreign or tampered
snapshots are refused (JSON only, known fields only: the store may be shared by a fleet)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from mailwarden.service.snapshot import restore, snapshot
from mailwarden.sources import Correlator, parse_lines
from service.helpers import genlog


def _messages(c: Correlator, lines: list[bytes]) -> list[dict[str, object]]:
    out = list(c.run(parse_lines(lines)))  # type: ignore[arg-type]
    return sorted((asdict(m) for m in out), key=lambda d: (d["qid"], d["arrival"]))  # type: ignore[return-value]


def test_restored_correlator_emits_what_an_uninterrupted_one_does(tmp_path: Path) -> None:
    lines = genlog(tmp_path / "g.log", 4000, seed=21)
    whole = _messages(Correlator(), lines)
    for cut in (1, 777, 2000, 3999):
        first = Correlator()
        done = [m for ev in parse_lines(lines[:cut]) for m in first.feed(ev)]  # type: ignore[arg-type]
        snap = json.loads(json.dumps(snapshot(first)))  # through text, as in the store
        assert len(snap["open"]) == len(first)
        second = Correlator()
        assert restore(second, snap) == len(first)
        rest = _messages(second, lines[cut:])
        got = sorted((asdict(m) for m in done), key=lambda d: (d["qid"], d["arrival"])) + rest
        got.sort(key=lambda d: (d["qid"], d["arrival"]))
        assert got == whole, cut


def test_connection_level_replies_survive_the_round_trip() -> None:
    """Messages still open with a reply of a non-final MX (``host X said``, ``refused to talk
    to me``) are saved and restored with it."""
    from mailwarden.tables import data_dir

    lines = (data_dir() / "samples" / "postfix-sample.log").read_bytes().splitlines(keepends=True)
    whole = _messages(Correlator(), lines)
    assert any(m["mx_replies"] for m in whole)
    with_mx = 0
    for cut in range(1, len(lines), 7):
        first = Correlator()
        done = [m for ev in parse_lines(lines[:cut]) for m in first.feed(ev)]  # type: ignore[arg-type]
        snap = json.loads(json.dumps(snapshot(first)))
        with_mx += sum(1 for m, _, _ in snap["open"] if m["mx_replies"])
        second = Correlator()
        restore(second, snap)
        got = [asdict(m) for m in done] + _messages(second, lines[cut:])
        got.sort(key=lambda d: (d["qid"], d["arrival"]))  # type: ignore[arg-type, return-value]
        assert got == whole, cut
    assert with_mx > 0  # the cuts did catch open messages with such replies


@pytest.mark.parametrize(
    "bad",
    [
        {"version": 99, "open": []},
        {"version": 1, "open": [[{"host": "h", "qid": "Q", "arrival": 1.0, "evil": 1}, 0, 0]]},
        {
            "version": 1,
            "open": [
                [
                    {
                        "host": "h",
                        "qid": "Q",
                        "arrival": 1.0,
                        "attempts": [{"ts": 1.0, "reply": "x"}],
                    },
                    0,
                    0,
                ]
            ],
        },
        {"version": 1, "open": [["not a message", 0, 0]]},
        {"version": 1, "open": [[{}, 0]]},
        "pickle? no",
    ],
)
def test_foreign_snapshots_are_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        restore(Correlator(), bad)
