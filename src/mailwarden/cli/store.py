"""``mailwarden store ...``: maintenance of the store (retention, a summary of what it holds).

``store prune`` deletes attempts, messages and inbound rejects older than ``[store]
attempts_days`` (90) and daily rollups older than ``[store] rollup_days`` (730); ``analyze``
runs the same after every import. ``--dry-run`` only counts.
"""

from __future__ import annotations

import typer

from mailwarden.cli import app

store_app = typer.Typer(help="The store: retention and contents.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command()
def prune(
    db: str = typer.Option(None, "--db", metavar="URL", help="Store URL (default: configured)."),
    attempts_days: int = typer.Option(None, "--attempts-days", min=1, help="Keep attempts N days."),
    rollup_days: int = typer.Option(None, "--rollup-days", min=1, help="Keep rollups N days."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; delete nothing."),
) -> None:
    """Delete detail rows past their retention; keep the daily rollups longer."""
    from mailwarden.config import load_settings
    from mailwarden.store.db import open_engine
    from mailwarden.store.retention import prune as do_prune

    s = load_settings()
    engine = open_engine(db or s.db_url())
    try:
        r = do_prune(
            engine,
            attempts_days=attempts_days or s.store.attempts_days,
            rollup_days=rollup_days or s.store.rollup_days,
            dry_run=dry_run,
        )
    finally:
        engine.dispose()
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb}: {r.attempts} attempts, {r.messages} messages, {r.inbound} inbound rejects "
        f"(older than {_day(r.attempts_cutoff)}); {r.rollups} daily rollups, "
        f"{r.rejections} rejection kinds (older than {_day(r.rollup_cutoff)})"
    )


@store_app.command()
def info(
    db: str = typer.Option(None, "--db", metavar="URL", help="Store URL (default: configured)."),
) -> None:
    """Row counts and time span of the store."""
    from sqlalchemy import func, select

    from mailwarden.config import load_settings
    from mailwarden.store import schema
    from mailwarden.store.db import open_engine, safe_url

    url = db or load_settings().db_url()
    engine = open_engine(url)
    try:
        with engine.connect() as c:
            typer.echo(f"store: {safe_url(url)}")
            for t in (
                schema.imports,
                schema.messages,
                schema.attempts,
                schema.rejections,
                schema.inbound_rejects,
                schema.daily_rollups,
                schema.origins,
            ):
                n = c.execute(select(func.count()).select_from(t)).scalar_one()
                typer.echo(f"{t.name:>16}: {n:,}")
            lo, hi = c.execute(
                select(func.min(schema.attempts.c.ts), func.max(schema.attempts.c.ts))
            ).one()
            typer.echo(f"{'attempts span':>16}: {_day(lo)} .. {_day(hi)}")
    finally:
        engine.dispose()


def _day(ts: float | None) -> str:
    import datetime as dt

    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")
