"""``mailwarden postfix ...``: the Postfix actuator.

* ``setup [--dry-run] [-c CONFIG_DIR]``: print and apply the main.cf/master.cf changes the
  breaker needs (idempotent; backup first; ``postfix check`` before reload);
* ``teardown [--dry-run] [-c CONFIG_DIR]``: revert them;
* ``bulk-transport --sender P --bind IP [--helo H] [--apply]``: keep bulk mail apart (own
  transport, source IP and HELO);
* ``socketmap``: serve the breaker's transport lookup in the foreground (``mailwarden run``
  starts and supervises it; run it alone to enforce without following the log).

Exit codes: 0 ok (also "nothing to do"), 2 error (Postfix refused the change: it was undone).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mailwarden.cli import app

if TYPE_CHECKING:
    from mailwarden.config import Settings
    from mailwarden.postfix.setup import Plan, Setup

postfix_app = typer.Typer(help="The Postfix actuator (configuration, transport lookup).")
app.add_typer(postfix_app, name="postfix")

_CONFIG_DIR = typer.Option(
    None, "-c", "--config-dir", help="Postfix configuration directory (default: \\[breaker])."
)


def make_setup(settings: Settings, config_dir: Path | None) -> Setup:
    from mailwarden.breaker.rules import RuleSet
    from mailwarden.postfix.control import Postfix
    from mailwarden.postfix.setup import Setup, SlowClone

    b = settings.breaker
    rules = RuleSet.load()
    return Setup(
        Postfix(config_dir or b.postfix_config),
        socketmap_host=b.socketmap_host,
        socketmap_port=b.socketmap_port,
        accept_then_park=b.accept_then_park,
        filter_rules=[(r.id, r.pattern.pattern) for r in rules.status_filter_rules() if r.pattern],
        slow=[SlowClone(s.rate_delay, s.concurrency) for s in rules.slow_specs()],
    )


def _print_plan(plan: Plan, title: str) -> None:
    if not plan.changes:
        typer.echo(f"{title}: nothing to do")
    for c in plan.changes:
        typer.echo(f"* {c.what}\n    $ {c.command}")
    for n in plan.notes:
        typer.echo(f"note: {n}", err=True)


@postfix_app.command("setup")
def setup(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the changes, apply nothing."),
    config_dir: Path | None = _CONFIG_DIR,
) -> None:
    """Configure Postfix for the breaker (transport lookup, status filter, clones, park)."""
    from mailwarden.config import load_settings

    s = make_setup(load_settings(), config_dir)
    plan = s.plan()
    _print_plan(plan, "setup")
    if dry_run or not plan.changes:
        return
    s.apply(plan)
    typer.echo(f"applied; backups of main.cf/master.cf are in {s.pf.config_dir}; Postfix reloaded")


@postfix_app.command("teardown")
def teardown(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the changes, apply nothing."),
    config_dir: Path | None = _CONFIG_DIR,
) -> None:
    """Revert what setup changed (keeping the admin's own later edits)."""
    from mailwarden.config import load_settings

    s = make_setup(load_settings(), config_dir)
    plan = s.teardown_plan()
    _print_plan(plan, "teardown")
    if dry_run or not plan.changes:
        return
    s.teardown(plan)
    typer.echo("reverted; Postfix reloaded")


@postfix_app.command("socketmap")
def socketmap(
    host: str = typer.Option("", help="Listen address (default: \\[breaker] socketmap_host)."),
    port: int = typer.Option(0, help="Listen port (default: \\[breaker] socketmap_port)."),
    view: Path | None = typer.Option(None, help="Enforcement view (default: in state_dir)."),
) -> None:
    """Serve the breaker's transport lookup in the foreground."""
    import asyncio
    import logging
    import signal

    from mailwarden.classify import Classifier
    from mailwarden.cli.breaker import view_path
    from mailwarden.config import load_settings
    from mailwarden.dnsutil import async_resolver
    from mailwarden.postfix.mx import MxCache
    from mailwarden.postfix.socketmap import Policy, SocketmapServer, ViewWatcher

    logging.basicConfig(level=logging.INFO, format="mailwarden socketmap: %(message)s")
    settings = load_settings()
    b = settings.breaker
    classifier = Classifier.load()

    async def serve() -> None:
        mx = MxCache(async_resolver(settings.dns))
        policy = Policy(
            ViewWatcher(view or view_path(settings)),
            mx,
            lambda h: classifier.provider_for_host(h),
            lookup_timeout=b.lookup_timeout,
        )
        server = SocketmapServer(policy)
        addr = await server.start(host or b.socketmap_host, port or b.socketmap_port)
        logging.info("listening on %s:%d", *addr)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    asyncio.run(serve())


@postfix_app.command("bulk-transport")
def bulk_transport(
    sender: list[str] = typer.Option(
        ..., "--sender", help="Bulk sender: local@domain, *@domain or @domain (repeatable)."
    ),
    bind: str = typer.Option(..., "--bind", help="Source IP address of the bulk transport."),
    helo: str = typer.Option("", "--helo", help="HELO name of the bulk transport (its PTR)."),
    name: str = typer.Option("bulk", "--name", help="Name of the master.cf transport."),
    apply: bool = typer.Option(False, "--apply", help="Apply (default: print what would be done)."),
    config_dir: Path | None = _CONFIG_DIR,
) -> None:
    """Keep bulk mail apart: its own smtp transport, source IP and HELO for the given senders
    (sender_dependent_default_transport_maps). Prints the plan; --apply carries it out."""
    from mailwarden.postfix import bulk
    from mailwarden.reputation.postfix_audit import load_config

    cdir = str(config_dir or "/etc/postfix")
    existing = ""
    with contextlib.suppress(Exception):  # no Postfix here: a plan can still be printed
        existing = load_config(cdir).get("sender_dependent_default_transport_maps")
    plan = bulk.plan(
        sender, bind, helo=helo, transport=name, config_dir=cdir, existing_maps=existing
    )
    typer.echo(plan.render())
    if apply:
        bulk.apply(plan)
        typer.echo(
            f"applied: bulk mail of {', '.join(sender)} now leaves through {name} from {bind}"
        )
    elif not helo:
        typer.echo("note: give --helo with the PTR name of the bulk IP", err=True)
