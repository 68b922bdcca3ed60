"""``mailwarden web [--bind 127.0.0.1:8025]``: serve the dashboard and ``/metrics`` (uvicorn).

* ``--hash-password``: read a password (prompt, or stdin when it is not a terminal) and print
  the line to put in ``[web] password_hash``; serves nothing.
* Without ``[web] token`` or ``password_hash`` a one-time token is made and printed: fine for a
  look, not for a service.

The breaker buttons act through the same wiring as ``mailwarden breaker open/close``
(:func:`mailwarden.cli.breaker.build`: store, enforcement view, Postfix hooks, alerts);
``mailwarden run`` serves the same app beside its loop, with the same :func:`wire` (breaker
control and queue inventory) and :func:`credentials`.
Exit codes: 0 (or death by the SIGTERM/SIGINT it was stopped with, as uvicorn re-raises it after
a clean shutdown), 2 error (bad bind address, bad config, port taken).
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from mailwarden.cli import app
from mailwarden.errors import ConfigError

if TYPE_CHECKING:
    from mailwarden.config import Settings
    from mailwarden.web.auth import Credentials
    from mailwarden.web.services import BreakerControl, ParkedSource

_BIND = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$")


def parse_bind(value: str) -> tuple[str, int]:
    """``127.0.0.1:8025``, ``[::1]:8025``, ``localhost:8025`` -> (host, port)."""
    m = _BIND.match(value.strip())
    if not m:
        raise ConfigError(f"bad bind address {value!r}: use HOST:PORT, e.g. 127.0.0.1:8025")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise ConfigError(f"bad port in {value!r}: 1-65535")
    host = m["v6"] or m["host"]
    if m["v6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"bad IPv6 address in {value!r}") from None
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wire(
    settings: Settings, **build_kw: Any
) -> tuple[BreakerControl, ParkedSource, Callable[[], None]]:
    """Breaker control and queue inventory over the real engine and Postfix (and a closer);
    ``build_kw`` go to :func:`mailwarden.cli.breaker.build` (``host``, ``dispatcher``,
    ``store_engine``)."""
    from mailwarden.cli.breaker import build
    from mailwarden.web.services import EngineControl, Parked

    w = build(settings, background=True, **build_kw)

    def parked() -> dict[str, Parked]:
        return {p: Parked(q.parked, q.held) for p, q in w.queue.inventory().items()}

    return EngineControl(w.engine, host=w.host), parked, w.close


def credentials(settings: Settings) -> tuple[Credentials, str]:
    """The login of ``[web] token`` / ``password_hash``; without either, a one-time token made
    for this run, returned second (else "") for the caller to show."""
    import secrets

    from mailwarden.web.auth import Credentials

    w = settings.web
    if w.token or w.password_hash:
        return Credentials(w.token, w.password_hash), ""
    one_time = secrets.token_urlsafe(24)
    return Credentials(one_time), one_time


@app.command()
def web(
    bind: str = typer.Option(
        None, "--bind", help="HOST:PORT (default \\[web] bind, 127.0.0.1:8025)."
    ),
    db: str = typer.Option(None, "--db", metavar="URL", help="Store URL (default: configured)."),
    hash_password: bool = typer.Option(
        False, "--hash-password", help="Print a \\[web] password_hash for a password, then exit."
    ),
) -> None:
    """Serve the web dashboard and Prometheus /metrics."""
    if hash_password:
        from mailwarden.web.auth import hash_password as make_hash

        if sys.stdin.isatty():
            pw = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        else:
            pw = sys.stdin.readline().rstrip("\r\n")
        typer.echo(f'password_hash = "{make_hash(pw)}"')
        return

    import logging

    import uvicorn

    from mailwarden.config import load_settings
    from mailwarden.errors import MailwardenError
    from mailwarden.store.db import open_engine
    from mailwarden.web.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    if db:
        settings.store.url = db
    host, port = parse_bind(bind or settings.web.bind)
    if not is_loopback(host) and not settings.web.secure_cookie:
        typer.echo(
            f"mailwarden: warning: serving on {host}, not loopback, without [web] secure_cookie: "
            "put it behind an HTTPS proxy",
            err=True,
        )
    creds, one_time = credentials(settings)
    if one_time:
        shown = f"[{host}]" if ":" in host else host
        typer.echo(
            f"mailwarden: no [web] token or password_hash configured; this run's token is\n"
            f"    {one_time}\n  log in at http://{shown}:{port}/login",
            err=True,
        )
    engine = open_engine(settings.db_url())
    control = parked = None
    closer: Callable[[], None] = lambda: None  # noqa: E731
    try:
        control, parked, closer = wire(settings, store_engine=engine)
    except MailwardenError as exc:
        typer.echo(f"mailwarden: warning: breaker control unavailable ({exc}); read-only", err=True)
    try:
        application = create_app(
            settings, engine=engine, control=control, parked=parked, credentials=creds
        )
        config = uvicorn.Config(
            application, host=host, port=port, log_level="info", server_header=False
        )
        server = uvicorn.Server(config)
        try:
            server.run()
        except SystemExit:
            if server.started:
                raise
            started = False
        else:
            started = server.started
        if not started:
            raise ConfigError(f"could not listen on {host}:{port} (in use, or not an address here)")
    finally:
        closer()
        engine.dispose()
