"""Agreement of the classifier with Sisimai on real bounces (sisimai/set-of-emails, BSD-2-Clause,
see tests/data/classify/bounces-LICENSE). Each row's Diagnostic-Code, Status and reply code go
through :meth:`Classifier.classify`; the host the bounce names selects the provider.

Rows whose reason Sisimai takes from the bounce's *structure* (feedback reports, auto-replies,
delivered notices, the DSN Action "delayed"/expiry, undecidable or mailer-error bodies) are the
bounce parser's job and are counted apart. Sisimai pseudo status codes (``X.0.9NN``) encode its
own verdict and are not passed in.

What the reply text cannot say, the bounce parser tells the classifier: the SMTP stage of the
refusal and whether the report is final (``status="expired"`` for a 4.x.x given up on). With
``stages=True`` (the default) each row gets what the parser passed for that recipient, read from
the same message in tests/data/dsn/eml; ``stages=False`` measures the text alone.

Run ``python tests/classify/bounce_eval.py`` for the table and every disagreement.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mailwarden.classify import Classifier
from mailwarden.classify.text import split_reply
from mailwarden.events import Classification, Reply
from mailwarden.sources.dsn import parse_bounce_file
from mailwarden.sources.dsn.reason import TextClassifier

DATA = Path(__file__).resolve().parents[1] / "data" / "classify" / "bounces-expected.jsonl"
EML = Path(__file__).resolve().parents[1] / "data" / "dsn"
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


class _Recorder(TextClassifier):
    """The bounce parser's classifier, noting the stage and outcome it passes per recipient."""

    def __init__(self, impl: Classifier) -> None:
        super().__init__(impl)
        self.current = ""
        self.seen: dict[str, tuple[str, str]] = {}

    def provider(self, host: str, recipient: str) -> str:
        self.current = recipient
        return super().provider(host, recipient)

    def classify(self, reply: Reply, *, dsn: str, status: str, provider: str) -> Classification:
        self.seen[self.current] = (reply.command, status)
        return super().classify(reply, dsn=dsn, status=status, provider=provider)


def stages_of(c: Classifier, file: str) -> dict[str, tuple[str, str]]:
    """recipient -> (SMTP stage, outcome) as the bounce parser passes them for ``file``."""
    rec = _Recorder(c)
    parse_bounce_file(EML / file, classifier=rec)
    return rec.seen


def evaluate(c: Classifier, *, stages: bool = True) -> list[Row]:
    out = []
    cache: dict[str, dict[str, tuple[str, str]]] = {}
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
        command, outcome = "", ""
        if stages:
            if r["file"] not in cache:
                cache[r["file"]] = stages_of(c, r["file"])
            command, outcome = cache[r["file"]].get(r.get("recipient") or "", ("", ""))
        if command:
            code_, enh_, body_ = split_reply(text_in)
            reply = Reply(code_, enh_, body_, command=command, raw=text_in)
            got = c.classify(reply, dsn=status, status=outcome, provider=prov)
        else:
            got = c.classify(None, text=text_in, dsn=status, status=outcome, provider=prov)
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
    c = Classifier.load()
    alone = summary(evaluate(c, stages=False))
    rows = evaluate(c)
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
        a_ok, a_n = alone[k]
        print(f"{k:14} {ok}/{n} = {ok / n:.1%}   (text alone: {a_ok}/{a_n} = {a_ok / a_n:.1%})")


if __name__ == "__main__":
    main()
