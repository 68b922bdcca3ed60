"""``mailwarden run [LOG...]``: the daemon (see :mod:`mailwarden.service.daemon`).

One supervised process that follows the mail log from its checkpoints and ingests it into the
store, drives the breaker and its socketmap lookup server, records the egress collector's
events, serves the dashboard and ``/metrics``, runs retention, blocklist checks, spike
detection and the daily report on schedule, and sends alerts. SIGTERM stops it cleanly, SIGHUP
reloads the configuration and tables. Logs: one JSON (or logfmt) event per line on stderr.
docs/service.md describes it; contrib/systemd/mailwarden.service runs it.

Detection to enforcement: the log is polled every ``[breaker] poll`` seconds (0.2), the view
is written at once and the socketmap server rereads it within 50 ms.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mailwarden.cli import app


@app.command()
def run(
    logs: list[Path] = typer.Argument(
        None, help="Mail logs to follow (default: \\[log] files, \\[log] journal, the system log)."
    ),
    from_start: bool = typer.Option(
        False, "--from-start", help="Read the log from its beginning on the first start."
    ),
    serve: bool = typer.Option(True, "--socketmap/--no-socketmap", help="Run the lookup server."),
    journal: bool = typer.Option(None, "--journal/--no-journal", help="Follow the journal."),
    db: str = typer.Option(
        None, "--db", metavar="URL", help="Store URL (sqlite:///…, postgresql://…)."
    ),
    host: str = typer.Option(
        None, "--host", help="Name this host's rows carry in a shared store (fleet)."
    ),
    web: bool = typer.Option(None, "--web/--no-web", help="Serve the dashboard (\\[web] bind)."),
    log_format: str = typer.Option(
        None, "--log-format", help="json, logfmt or text (\\[service] log_format)."
    ),
) -> None:
    """Run mailwarden as a service: follow, store, protect, alert, report."""
    from mailwarden.config import DEFAULT_LOG_CANDIDATES, config_path, load_settings
    from mailwarden.errors import ConfigError
    from mailwarden.service import logs as slogs
    from mailwarden.service.daemon import Daemon

    settings = load_settings()
    if db:
        settings.store.url = db
    if log_format:
        if log_format not in slogs.FORMATTERS:
            raise ConfigError(f"--log-format {log_format!r}: json, logfmt or text")
        settings.service.log_format = log_format
    slogs.setup(settings.service.log_format, settings.service.log_level)
    use_journal = settings.log.journal if journal is None else journal
    paths = [str(p) for p in logs or []] or list(settings.log.files)
    if not paths and not use_journal:
        found = [c for c in DEFAULT_LOG_CANDIDATES if Path(c).is_file()]
        if not found:
            raise ConfigError(
                "no mail log found ("
                + ", ".join(DEFAULT_LOG_CANDIDATES)
                + "): name one, or set [log] files or [log] journal = true"
            )
        paths = found[:1]
    if paths and journal:
        raise ConfigError("follow either log files or the journal, not both")
    d = Daemon(
        settings,
        paths=[] if use_journal and not logs else paths,
        journal=use_journal and not logs,
        from_start=from_start,
        socketmap=serve,
        host=host or "",
        config_path=config_path(),
        db_url=db or "",
        web=web,
    )
    d.install_signals()
    raise typer.Exit(d.run())
