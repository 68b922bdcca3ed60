"""``mailwarden bounce FILE.eml|-``: read one bounce, feedback report or auto-reply and show one
record per recipient (rich table, or ``--json`` with the schema of docs/bounce-json.md).

Exit codes: 0 recipients found, 1 the mail is not a bounce (nothing found), 2 error
(unreadable file, not a mail message, too large).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from mailwarden.cli import app
from mailwarden.errors import EXIT_OK, EXIT_WARNING

#: The stable JSON fields, in output order (see docs/bounce-json.md); extras follow them.
STABLE = ("recipient", "reason", "scope", "status", "replycode", "diagnostic", "rhost", "provider")
EXTRA = ("action", "lhost", "issuer", "url", "feedback_type")


@app.command()
def bounce(
    source: str = typer.Argument(..., metavar="FILE.eml|-", help="The message; - reads stdin."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (docs/bounce-json.md)."),
) -> None:
    """Parse a bounce (DSN), feedback report or auto-reply: one record per recipient."""
    import json

    from mailwarden.errors import SourceError
    from mailwarden.sources.dsn import parse_bounce, parse_bounce_file

    if source == "-":
        data = sys.stdin.buffer.read()
        try:
            report = parse_bounce(data)
        except SourceError as exc:
            raise SourceError(str(exc), source="<stdin>") from exc
    else:
        report = parse_bounce_file(Path(source))
    rows = [to_json(r) for r in report.recipients]
    if as_json:
        doc = {"format": report.format, "subject": report.subject, "recipients": rows}
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        _print_table(rows, report.format, report.subject)
    raise typer.Exit(EXIT_OK if rows else EXIT_WARNING)


def to_json(rec: Any) -> dict[str, str]:
    """A :class:`~mailwarden.events.BounceRecipient` as the JSON object of the schema."""
    return {k: str(getattr(rec, k) or "") for k in (*STABLE, *EXTRA)}


def _print_table(rows: list[dict[str, str]], fmt: str, subject: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    if not rows:
        console.print("[yellow]not a bounce: no failed recipient found[/yellow]")
        return
    table = Table(
        title=f"{subject[:60]} ({fmt})" if subject else fmt,
        title_justify="left",
        expand=False,
        pad_edge=False,
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("recipient", overflow="fold", max_width=30)
    table.add_column("reason", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("remote host", overflow="fold", max_width=22)
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), r["recipient"], r["reason"], r["status"], r["replycode"], r["rhost"])
    console.print(table)
    for i, r in enumerate(rows, 1):
        extra = ", ".join(x for x in (r["provider"], r["issuer"], r["url"]) if x)
        console.print(f"[bold]{i}.[/bold] {r['diagnostic'] or '(no diagnostic)'}", highlight=False)
        if extra:
            console.print(f"   {extra}", highlight=False)
