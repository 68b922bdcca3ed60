"""``mailwarden relaytest HOST``: is this SMTP server an open relay?"""

from __future__ import annotations

import typer

from mailwarden.cli import app


@app.command()
def relaytest(
    host: str = typer.Argument(..., help="Host name or IP of the SMTP server to test."),
    port: int = typer.Option(25, "--port", "-p"),
    timeout: float = typer.Option(15.0, "--timeout"),
    source: str = typer.Option("", "--source", help="Our source address for the test."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Test whether an SMTP server relays for a foreign domain (like a manual telnet test).

    MAIL/RCPT probes with the classic address tricks, never DATA: nothing is delivered.
    Exit status: 0 closed, 2 open relay, 1 the test could not run.
    """
    from rich.console import Console

    from mailwarden.cli._findings import as_json, render
    from mailwarden.reputation.findings import exit_code
    from mailwarden.reputation.relaytest import findings
    from mailwarden.reputation.relaytest import relaytest as run

    res = run(host, port, timeout=timeout, source=source)
    f = findings(res)
    if json_out:
        typer.echo(
            as_json(
                f,
                open_relay=res.open_relay,
                relayed=[
                    {"mail_from": p.mail_from, "rcpt_to": p.rcpt_to, "probe": p.note}
                    for p in res.relays
                ],
            )
        )
    else:
        render(f, Console(), verbose=True)
    raise typer.Exit(exit_code(f))
