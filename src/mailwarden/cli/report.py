"""``mailwarden report``: what changed in a period (24 h by default) against the period before,
from the store: new rejections by provider, breaker events, new origins, spikes, egress alerts,
blocklist changes, SASL failures (see :mod:`mailwarden.report.daily`).

``--host`` (repeatable) limits it to those hosts of a shared store (fleet mode); ``--format``
text (default), html (self-contained, mailable) or json (schema ``mailwarden.daily/1``);
``--mail`` sends it to ``[alerts] mail_to`` the way the daemon's daily report goes.
Exit codes: 0 ok, 2 error.
"""

from __future__ import annotations

import json
import sys

import typer

from mailwarden.cli import app


@app.command()
def report(
    since: str = typer.Option("24h", "--since", help="Start (24h, 7d, 2026-11-27, ...)."),
    until: str = typer.Option("now", "--until", help="End of the period."),
    fmt: str = typer.Option("text", "--format", help="text, html or json."),
    host: list[str] = typer.Option(None, "--host", help="Only these hosts (repeatable)."),
    db: str = typer.Option(
        None, "--db", metavar="URL", help="Store URL (sqlite:///…, postgresql://…)."
    ),
    mail: bool = typer.Option(False, "--mail", help="Mail it to \\[alerts] mail_to."),
) -> None:
    """Daily report: what changed since the period before, per provider, origin and host."""
    import time

    from mailwarden.cli.analyze import parse_time
    from mailwarden.config import load_settings
    from mailwarden.errors import ConfigError
    from mailwarden.report.daily import build_report, render_html, render_text
    from mailwarden.store.db import open_engine

    if fmt not in ("text", "html", "json"):
        raise ConfigError(f"--format {fmt!r}: text, html or json")
    settings = load_settings()
    now = time.time()
    t0, t1 = parse_time(since, now=now), parse_time(until, now=now)
    if t1 <= t0:
        raise ConfigError("--until must be after --since")
    engine = open_engine(db or settings.db_url())
    try:
        doc = build_report(engine, since=t0, until=t1, hosts=host or None, settings=settings)
    finally:
        engine.dispose()
    if fmt == "json":
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=1, default=str) + "\n")
    elif fmt == "html":
        sys.stdout.write(render_html(doc) + "\n")
    else:
        sys.stdout.write(render_text(doc))
    if mail:
        from mailwarden.report.alerts import Alert
        from mailwarden.report.channels import mail_channel, never_park

        ch = mail_channel(settings)
        if ch is None:
            raise ConfigError("--mail: set [alerts] mail_to")
        ch.send(
            Alert(
                kind="report",
                key="report:manual",
                severity="info",
                title=f"report: {doc['summary']['headline']}",
                text=render_text(doc),
                html=render_html(doc),
                host=",".join(host or []),
            )
        )
        typer.echo(f"mailwarden: report mailed to {', '.join(never_park(settings))}", err=True)
