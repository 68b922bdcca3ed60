"""Every bounce sample of tests/data/dsn/eml against Sisimai v5's answer (expected.jsonl).

Prints a coverage table per format family (like Sisimai's) and asserts the agreement floors
reached so far; the cases still wrong are listed with the reason in tests/data/dsn/unsolved.txt.
Pseudo status codes Sisimai invents (``5.0.9xx``, ``status_is_sisimai_pseudo``) are not
written in the mail, so an empty status is expected there.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from mailwarden.events import REASONS
from mailwarden.sources.dsn import BounceReport, parse_bounce_file

DATA = Path(__file__).resolve().parent.parent / "data" / "dsn"
FIELDS = ("recipient", "status", "replycode", "rhost", "reason")

#: Agreement floors (share of expected recipients), raised as the parser improves.
FLOORS = {"recipient": 0.99, "status": 0.97, "replycode": 0.97, "rhost": 0.87, "reason": 0.95}


def _expected() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in (DATA / "expected.jsonl").read_text().splitlines():
        row = json.loads(line)
        out[row["file"]].append(row)
    return out


def _agrees(field: str, got: str, row: dict[str, Any]) -> bool:
    want = row["status"] if field == "status" else row.get(field)
    if field == "recipient" and want is None:
        return True  # Sisimai gives no address (undisclosed); anything we find is fine
    if field == "status" and row["status_is_sisimai_pseudo"]:
        want = ""
    if field == "reason" and got == row.get("reason_alternative"):
        return True
    if field == "rhost" and want and got:
        # Sisimai keeps comments after the host name ("mx. (TCP|...)"); compare the name
        want = re.split(r"[\s(]", want.strip())[0].rstrip(".").strip("[]")
    return (got or "") == (want or "")


def _family(name: str) -> str:
    return re.sub(r"-\d+\.eml$", "", name.split("/")[-1])


@pytest.fixture(scope="module")
def results() -> dict[str, BounceReport]:
    return {f: parse_bounce_file(DATA / f) for f in _expected()}


def test_agreement_with_sisimai(results: dict[str, BounceReport]) -> None:
    expected = _expected()
    total: Counter[str] = Counter()
    good: Counter[str] = Counter()
    per_family: dict[str, Counter[str]] = defaultdict(Counter)
    wrong: list[str] = []
    for f, rows in expected.items():
        got = results[f].recipients
        fam = _family(f)
        for i, row in enumerate(rows):
            g = got[i] if i < len(got) else None
            per_family[fam]["n"] += 1
            for field in FIELDS:
                value = getattr(g, field) if g is not None else ""
                ok = g is not None and _agrees(field, value, row)
                total[field] += 1
                good[field] += ok
                per_family[fam][field] += ok
                if not ok:
                    wrong.append(f"{f} #{i + 1} {field}: got {value!r} want {row.get(field)!r}")
    print("\nfamily                     n  " + "  ".join(f"{f[:7]:>7}" for f in FIELDS))
    for fam in sorted(per_family):
        c = per_family[fam]
        print(f"{fam:24} {c['n']:3}  " + "  ".join(f"{c[f] / c['n']:7.0%}" for f in FIELDS))
    share = {f: good[f] / total[f] for f in FIELDS}
    print(
        "ALL" + " " * 21 + f"{total['reason']:3}  " + "  ".join(f"{share[f]:7.1%}" for f in FIELDS)
    )
    for f in FIELDS:
        assert share[f] >= FLOORS[f], (
            f"{f} agreement {share[f]:.1%} < {FLOORS[f]:.0%}\n"
            + "\n".join(w for w in wrong if f" {f}:" in w)
        )


def test_recipient_count_and_order(results: dict[str, BounceReport]) -> None:
    """One record per failed recipient, in the message's order (where we find them all)."""
    expected = _expected()
    exact = 0
    for f, rows in expected.items():
        got = [r.recipient for r in results[f].recipients]
        want = [r["recipient"] for r in rows if r["recipient"]]
        if got[: len(want)] == want and len(got) == len(rows):
            exact += 1
    assert exact / len(expected) >= 0.99


def test_every_reason_is_in_the_vocabulary(results: dict[str, BounceReport]) -> None:
    for f, rep in results.items():
        for r in rep.recipients:
            assert r.reason in REASONS, (f, r.reason)
            assert r.scope in ("ours", "recipient", "transient", ""), (f, r.scope)


SYNTHETIC = DATA / "synthetic"


def _synthetic() -> list[dict[str, str]]:
    return [json.loads(x) for x in (SYNTHETIC / "expected.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("row", _synthetic(), ids=lambda r: f"{r['file']}:{r['recipient']}")
def test_layouts_not_in_the_sisimai_set(row: dict[str, str]) -> None:
    """Hand-made bounces in layouts the development set lacks (Domino, Office 365 with the
    administrators' section, several recipients per Exim/Postfix/qmail text, delay notices,
    a German auto-reply): every expected field must match."""
    rep = parse_bounce_file(SYNTHETIC / row["file"])
    got = {r.recipient: r for r in rep.recipients}
    assert row["recipient"] in got, [r.recipient for r in rep.recipients]
    rec = got[row["recipient"]]
    for field, want in row.items():
        if field not in ("file", "recipient"):
            assert getattr(rec, field) == want, (field, rec)
