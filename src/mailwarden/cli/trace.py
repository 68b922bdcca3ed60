"""``mailwarden trace FILE.eml|- [--json] [--live]``: every Received hop, top first, with its
fields and plain-language findings, the trust boundary and whether our MTA sent it.

Offline by default (headers, our identity, the mailwarden store); ``--live`` adds DNS checks.
Exit codes: 0 nothing suspicious, 1 warnings (or "sent directly by another program"),
2 error (unreadable input, no Received header at all).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from mailwarden.cli import app
from mailwarden.errors import EXIT_OK, EXIT_WARNING

_MAX_INPUT = 64 * 1024 * 1024  # read at most this much of a message (headers come first)


@app.command()
def trace(
    source: str = typer.Argument(..., metavar="FILE.eml|-", help="The message; - reads stdin."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (docs/trace-json.md)."),
    live: bool = typer.Option(False, "--live", help="Also check PTR/FCrDNS/HELO in DNS."),
    no_store: bool = typer.Option(
        False, "--no-store", help="Do not consult the mailwarden store (our MTA's logs)."
    ),
) -> None:
    """Explain a message's Received headers: hops, findings, and whether our MTA sent it."""
    import json

    from mailwarden.config import load_settings
    from mailwarden.errors import SourceError
    from mailwarden.forensics.run import report_json, trace_message

    data = _read(source)
    settings = load_settings()
    report, me = trace_message(data, settings, live=live, use_store=not no_store)
    if not report.hops:
        raise SourceError("no Received header found", source=source if source != "-" else "<stdin>")
    doc = report_json(report, me)
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        _print(doc)
    worrying = report.verdict.kind == "direct" or any(
        f.severity != "info" for r in report.hops for f in r.findings
    )
    raise typer.Exit(EXIT_WARNING if worrying else EXIT_OK)


def _read(source: str) -> bytes:
    from mailwarden.errors import SourceError

    try:
        if source == "-":
            return sys.stdin.buffer.read(_MAX_INPUT)
        with Path(source).open("rb") as fh:
            return fh.read(_MAX_INPUT)
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}", source=source) from exc


_MARK = {"info": "[dim]•[/dim]", "warning": "[yellow]![/yellow]", "error": "[red]✗[/red]"}


def _print(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    con = Console(soft_wrap=False, highlight=False)
    if doc["message_id"]:
        con.print(f"[bold]Message-ID[/bold] {escape(doc['message_id'])}")
    for h in doc["hops"]:
        when = h["date"] or "no date"
        if h["parsed"]:
            head = (
                f"[bold]#{h['index']}[/bold] {escape(h['ip'])} → {escape(h['by'] or '?')}"
                f"  [dim]{escape(when)}[/dim]"
            )
            parts = [
                f"HELO {escape(h['helo']) or '—'}",
                f"rDNS {escape(h['rdns']) or '— (' + h['rdns_status'] + ')'}",
            ]
            for key, label in (("with", "with"), ("id", "id"), ("auth", "auth"), ("mta", "mta")):
                if h[key]:
                    parts.append(f"{label} {escape(str(h[key]))}")
            if h["tls"]["version"] or h["tls"]["cipher"]:
                parts.append(
                    f"TLS {escape(h['tls']['version'] + ' ' + h['tls']['cipher']).strip()}"
                )
            detail = " · ".join(parts)
        else:
            head = (
                f"[bold]#{h['index']}[/bold] [dim]{escape(h['by'] or '(no receiver)')}  "
                f"{escape(when)}[/dim]"
            )
            detail = f"[dim]{escape(h['raw'][:160])}[/dim]"
        con.print(head)
        con.print(f"    {detail}")
        for f in h["findings"]:
            con.print(f"    {_MARK[f['severity']]} {escape(f['text'])}")
    v = doc["verdict"]
    colour = {"direct": "red", "postfix": "green", "inbound": "cyan"}.get(v["kind"], "yellow")
    con.print()
    con.print(
        f"[bold {colour}]Verdict:[/bold {colour}] {escape(v['summary'])} "
        f"[dim](confidence {v['confidence']})[/dim]"
    )
    for e in v["evidence"]:
        con.print(f"  - {escape(e)}")
    for n in doc["notes"]:
        con.print(f"[dim]note: {escape(n)}[/dim]")
