"""Agreement of the classifier with Sisimai on real bounces (sisimai/set-of-emails, BSD-2-Clause,
see tests/data/classify/bounces-LICENSE). Each row's Diagnostic-Code, Status and reply code go
through :meth:`Classifier.classify`; the host the bounce names selects the provider.

Rows whose reason Sisimai takes from the bounce's *structure* (feedback reports, auto-replies,
delivered notices, the DSN Action "delayed"/expiry, undecidable or mailer-error bodies) are the
bounce parser's job and are counted apart. Sisimai pseudo status codes (``X.0.9NN``) encode its
own verdict and are not passed in.

Run ``python tests/classify/bounce_eval.py`` for the table and every disagreement.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mailwarden.classify import Classifier

DATA = Path(__file__).resolve().parents[1] / "data" / "classify" / "bounces-expected.jsonl"
STRUCTURAL = frozenset(
    {"feedback", "vacation", "delivered", "expired", "onhold", "mailererror", "undefined"}
)


@dataclass(frozen=True, slots=True)
class Row:
    file: str
    expected: str
    alternative: str
    got: str
    rule: str
    text: str
    status: str
    structural: bool

    @property
    def ok(self) -> bool:
        return self.got in (self.expected, self.alternative)


def evaluate(c: Classifier) -> list[Row]:
    out = []
    for line in DATA.read_text().splitlines():
        r = json.loads(line)
        status = "" if r.get("status_is_sisimai_pseudo") else (r.get("status") or "")
        text = r.get("diagnosticcode") or ""
        code = r.get("replycode") or ""
        if code and not text.lstrip().startswith(code):
            text_in = f"{code} {text}" if text else code
        else:
            text_in = text
        host = r.get("rhost") or ""
        prov = c.provider_for_host(host.split()[0]) if host else ""
        got = c.classify(None, text=text_in, dsn=status, provider=prov)
        out.append(
            Row(
                file=r["file"],
                expected=r["reason"],
                alternative=r.get("reason_alternative") or "",
                got=got.reason,
                rule=got.rule,
                text=text[:160],
                status=r.get("status") or "",
                structural=r["reason"] in STRUCTURAL,
            )
        )
    return out


def summary(rows: list[Row]) -> dict[str, tuple[int, int]]:
    reply = [r for r in rows if not r.structural]
    struct = [r for r in rows if r.structural]
    return {
        "reply-decided": (sum(r.ok for r in reply), len(reply)),
        "structural": (sum(r.ok for r in struct), len(struct)),
        "all": (sum(r.ok for r in rows), len(rows)),
    }


def main() -> None:
    rows = evaluate(Classifier.load())
    for r in rows:
        if not r.ok:
            tag = "S" if r.structural else "-"
            print(f"{tag} {r.expected:15} got {r.got:15} {r.rule:28} {r.status:8} {r.text[:110]!r}")
    per = Counter((r.expected, r.ok) for r in rows if not r.structural)
    print()
    for reason in sorted({r.expected for r in rows if not r.structural}):
        ok, bad = per[(reason, True)], per[(reason, False)]
        print(f"  {reason:16} {ok:3}/{ok + bad:<3}")
    for k, (ok, n) in summary(rows).items():
        print(f"{k:14} {ok}/{n} = {ok / n:.1%}")


if __name__ == "__main__":
    main()
