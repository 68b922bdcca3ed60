"""Command-line interface: the typer root. One module per command group, registered here.

Exit codes: 0 ok, 1 warnings/findings, 2 error (see :mod:`mailwarden.errors`).
"""

from __future__ import annotations

import sys

import typer

from mailwarden import __version__
from mailwarden.errors import EXIT_ERROR, MailwardenError

app = typer.Typer(
    name="mailwarden",
    help="Watch, explain and protect outbound mail on a self-hosted Postfix.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Watch, explain and protect outbound mail on a self-hosted Postfix."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _register() -> None:
    """Import command modules so they attach themselves to ``app``.

    Each module ``mailwarden/cli/<name>.py`` (not starting with ``_``) does
    ``from mailwarden.cli import app`` and decorates its commands, or builds a sub-typer and
    calls ``app.add_typer``. Modules are found by listing the package, so adding a command is
    adding a file. Heavy imports belong inside the command functions, to keep start-up fast.
    """
    import importlib
    import pkgutil

    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"mailwarden.cli.{mod.name}")


def main() -> None:
    """Entry point: run the app, turning deliberate errors into a message and exit code 2."""
    _register()
    try:
        app()
    except MailwardenError as exc:
        typer.echo(f"mailwarden: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
