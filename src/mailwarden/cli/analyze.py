"""``mailwarden analyze [FILE...]``: read Postfix logs, classify every rejection by provider and
reason, store the results, and report (rich, or ``--json`` in the schema of
docs/analyze-json.md). ``mailwarden store prune`` lives in :mod:`mailwarden.cli.store`.

With no FILE: the systemd journal with ``--journal`` or ``[log] journal = true``, else the
``[log] files`` of the configuration, else the first existing system mail log
(``config.DEFAULT_LOG_CANDIDATES``), else the bundled sample log (said on stderr).

Exit codes: 0 ok; 1 some files could not be read (named in the report, the rest was analysed);
2 error (no readable file, bad option, store failure).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

import typer

from mailwarden.cli import app
from mailwarden.errors import EXIT_WARNING

_REL = re.compile(r"^-?(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(value: str, *, now: float | None = None) -> float:
    """``--since``/``--until`` values -> POSIX seconds.

    Accepts ISO 8601 dates and times (``2026-11-27``, ``2026-11-27 17:00``,
    ``2026-11-27T17:00:00+01:00``; without an offset: local time, as syslog stamps),
    ``now``, ``today``, ``yesterday``, and ages such as ``2h``, ``30m``, ``7d`` (ago).
    """
    import time

    from mailwarden.errors import ConfigError

    t = time.time() if now is None else now
    v = value.strip().lower()
    if v == "now":
        return t
    if v in ("today", "yesterday"):
        d = dt.datetime.fromtimestamp(t).date()
        if v == "yesterday":
            d -= dt.timedelta(days=1)
        return dt.datetime(d.year, d.month, d.day).timestamp()
    m = _REL.match(v)
    if m:
        return t - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"cannot read the time {value!r}: use 2026-11-27, '2026-11-27 17:00', "
            "an ISO 8601 time, today, yesterday, or an age like 2h / 7d"
        ) from None
    return parsed.timestamp()


def default_logs() -> tuple[list[Path], str]:
    """The logs to read when none is named, and a note for stderr ("" when none is needed)."""
    from mailwarden.config import DEFAULT_LOG_CANDIDATES, load_settings
    from mailwarden.tables import data_dir

    settings = load_settings()
    if settings.log.files:
        return [Path(f) for f in settings.log.files], ""
    for cand in DEFAULT_LOG_CANDIDATES:
        p = Path(cand)
        if p.is_file():
            return [p], ""
    sample = data_dir() / "samples" / "postfix-sample.log"
    note = (
        "mailwarden: no system mail log found ("
        + ", ".join(DEFAULT_LOG_CANDIDATES)
        + f"); analysing the bundled sample {sample} (--journal reads the systemd journal)"
    )
    return [sample], note


@app.command()
def analyze(
    files: list[Path] = typer.Argument(
        None,
        metavar="FILE",
        help="Postfix logs: plain, .gz, .bz2, .xz, rotated sets in any order (read oldest first).",
    ),
    since: str = typer.Option(None, "--since", help="Only events from then (2026-11-27, 2h, ...)."),
    until: str = typer.Option(None, "--until", help="Only events before then."),
    db: str = typer.Option(
        None, "--db", metavar="URL", help="Store URL (sqlite:///…, postgresql://…)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (docs/analyze-json.md)."),
    show_unparsed: bool = typer.Option(False, "--show-unparsed", help="List lines not understood."),
    no_store: bool = typer.Option(False, "--no-store", help="Report only; write nothing."),
    workers: int = typer.Option(0, "--workers", min=0, max=64, help="Worker processes (0: auto)."),
    journal: bool = typer.Option(
        False, "--journal", help="Read the systemd journal (journalctl) instead of files."
    ),
) -> None:
    """Explain a Postfix log: who rejects our mail, why, and who sends it."""
    import json

    from rich.console import Console

    from mailwarden.config import load_settings
    from mailwarden.pipeline import analyze as run
    from mailwarden.pipeline import journal_command

    settings = load_settings()
    t_since = parse_time(since) if since else None
    t_until = parse_time(until) if until else None
    journal = journal or (not files and settings.log.journal)
    if journal and files:
        from mailwarden.errors import ConfigError

        raise ConfigError("give either FILE arguments or --journal, not both")
    paths: list[Path] = []
    if files:
        paths = list(files)
    elif not journal:
        paths, note = default_logs()
        if note:
            typer.echo(note, err=True)
    db_url = None if no_store else (db or settings.db_url())

    err = Console(stderr=True)
    progress = None
    bar = None
    size = sum(p.stat().st_size for p in paths if p.is_file())
    if err.is_terminal and size > 8_000_000:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        task = bar.add_task("reading", total=size)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        bar.start()
    try:
        result = run(
            paths,
            since=t_since,
            until=t_until,
            db_url=db_url,
            show_unparsed=show_unparsed,
            workers=workers,
            attempts_days=settings.store.attempts_days,
            rollup_days=settings.store.rollup_days,
            progress=progress,
            journal=journal_command(t_since, t_until) if journal else None,
        )
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        sys.stdout.write(json.dumps(result.document, ensure_ascii=False, indent=1) + "\n")
    else:
        from mailwarden.report.render import render

        render(result.document, Console())
    if result.document["errors"]:
        raise typer.Exit(EXIT_WARNING)
