"""Render reputation findings as a rich table (80 columns) or JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailwarden.reputation.findings import Finding, exit_code, rank

STYLE = {
    "ok": "green",
    "info": "cyan",
    "warning": "yellow",
    "error": "magenta",
    "problem": "bold red",
}
LABEL = {"ok": "ok", "info": "info", "warning": "WARN", "error": "ERROR", "problem": "PROBLEM"}


def as_json(findings: list[Finding], **extra: Any) -> str:
    summary: dict[str, int] = {}
    for f in findings:
        summary[f.severity] = summary.get(f.severity, 0) + 1
    return json.dumps(
        {
            "findings": [f.as_dict() for f in findings],
            "summary": summary,
            "exit": exit_code(findings),
            **extra,
        },
        indent=2,
    )


def render(findings: list[Finding], console: Console, *, verbose: bool = False) -> None:
    shown = findings if verbose else [f for f in findings if f.severity != "ok"]
    table = Table(show_header=True, header_style="bold", expand=False, show_lines=True)
    table.add_column("", no_wrap=True, width=7)
    table.add_column("check", no_wrap=True, max_width=14)
    table.add_column("finding", ratio=1)
    for f in sorted(shown, key=lambda f: (-rank(f.severity), f.check, f.subject)):
        body = Text(f.title)
        if f.subject and f.subject not in f.title:
            body.append(f"  [{f.subject}]", style="dim")
        if f.evidence and (verbose or f.severity in ("problem", "error")):
            ev = f.evidence if len(f.evidence) < 400 else f.evidence[:400] + " ..."
            body.append("\n" + ev, style="dim")
        if f.fix:
            body.append("\nfix: ", style="bold")
            body.append(f.fix)
        if f.url:
            body.append("\n" + f.url, style="underline")
        table.add_row(Text(LABEL[f.severity], style=STYLE[f.severity]), f.check, body)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in LABEL}
    if shown:
        console.print(table)
    console.print(
        "  ".join(f"[{STYLE[s]}]{n} {s}[/]" for s, n in counts.items() if n)
        + ("" if verbose else "   (--verbose shows the checks that passed and all evidence)")
    )
