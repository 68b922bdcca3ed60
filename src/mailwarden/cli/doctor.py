"""``mailwarden doctor``: reputation, DNS and Postfix configuration checks of this host."""

from __future__ import annotations

from pathlib import Path

import typer

from mailwarden.cli import app


@app.command()
def doctor(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    postfix_dir: str = typer.Option(None, "--postfix-dir", "-c", help="Postfix config directory."),
    ip: list[str] = typer.Option(
        [], "--ip", help="Our sending IP (repeatable; default: detected)."
    ),
    domain: list[str] = typer.Option([], "--domain", help="Our mail domain (repeatable)."),
    helo: list[str] = typer.Option([], "--helo", help="Our HELO name (repeatable)."),
    dkim: list[str] = typer.Option([], "--dkim", help="DKIM selector as selector:domain."),
    message: list[Path] = typer.Option(
        [], "--message", help="A sent message (.eml) whose DKIM signatures to verify (repeatable)."
    ),
    no_dns: bool = typer.Option(False, "--no-dns", help="Skip the live DNS checks."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show passed checks and evidence."),
) -> None:
    """Check PTR/FCrDNS/HELO, blocklists, SPF/DKIM/DMARC and the Postfix set-up.

    Exit status: 0 ok, 1 warnings (or a check could not run), 2 problems.
    """
    from rich.console import Console

    from mailwarden.cli._findings import as_json, render
    from mailwarden.config import load_settings
    from mailwarden.reputation.doctor import DoctorOptions, run_doctor
    from mailwarden.reputation.findings import exit_code

    settings = load_settings()
    opts = DoctorOptions(
        dns=not no_dns,
        config_dir=postfix_dir,
        ips=ip,
        domains=domain,
        helo_names=helo,
        dkim=dkim,
        messages=[p.read_bytes() for p in message],
    )
    findings = run_doctor(settings, opts)
    if json_out:
        typer.echo(as_json(findings))
    else:
        render(findings, Console(), verbose=verbose)
    raise typer.Exit(exit_code(findings))
