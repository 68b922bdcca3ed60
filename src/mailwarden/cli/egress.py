"""``mailwarden egress``: run the privileged collector, record its events, show summaries,
alerts and a live view, and say which collectors work here (``doctor``).

Records are keyed by host (fleet mode: one store, several hosts): ``ingest`` tags them with
this host's name (``--host``, else ``[log] host``, else the host name: the daemon's), ``top`` and
``alerts`` show every host unless ``--host`` picks one. ``ingest`` alerts through the one
dispatcher of :mod:`mailwarden.report.alerts` (``[alerts]`` channels, dedup, rate limits)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from mailwarden.cli import app
from mailwarden.cli.breaker import check_host

if TYPE_CHECKING:
    from mailwarden.config import Settings

eg = typer.Typer(
    help="Who opens connections to remote SMTP ports (per process and user).", no_args_is_help=True
)
app.add_typer(eg, name="egress")

Socket = Annotated[str | None, typer.Option("--socket", help="collector socket path")]
HostFilter = Annotated[
    str, typer.Option("--host", help="only this host's records (default: every host)")
]


def _settings() -> Settings:
    from mailwarden.config import load_settings

    return load_settings()


@eg.command()
def run(
    socket_path: Socket = None,
    collector: Annotated[
        list[str] | None,
        typer.Option("--collector", help="ebpf, nflog, sockdiag (repeatable; default from config)"),
    ] = None,
    netns: Annotated[str | None, typer.Option(help="read NFLOG/sock_diag in this netns")] = None,
) -> None:
    """The privileged collector (root): publishes attributed events on a unix socket."""
    import logging

    from mailwarden.egress.service import EgressService, install_signal_handlers

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    s = _settings()
    svc = EgressService(s.egress, socket_path=socket_path, collectors=collector, netns=netns)
    install_signal_handlers(svc, lambda: _settings().egress)
    typer.echo(f"egress: publishing on {svc.socket_path}", err=True)
    try:
        svc.run()
    except RuntimeError as exc:
        typer.echo(f"mailwarden: error: {exc}", err=True)
        raise typer.Exit(2) from exc


@eg.command()
def ingest(
    socket_path: Socket = None,
    once: Annotated[
        bool, typer.Option("--once", help="stop when the collector goes away (else reconnect)")
    ] = False,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="name this host's records carry (default: \\[log] host, host name)"
        ),
    ] = "",
) -> None:
    """Record the collector's events in the store (summaries, raw events, alerts). Unprivileged.

    Reconnects (every 2 s) when the collector is not there or restarts, unless ``--once``."""
    import logging

    from mailwarden.egress.client import ProviderResolver
    from mailwarden.egress.client import ingest as do_ingest
    from mailwarden.egress.summary import Recorder
    from mailwarden.errors import MailwardenError
    from mailwarden.report.alerts import EgressAdapter, dispatcher_from_settings
    from mailwarden.service.daemon import host_id
    from mailwarden.store.db import open_engine

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    s = _settings()
    me = host_id(s, check_host(host))
    db = open_engine(s.db_url())
    dispatcher = dispatcher_from_settings(s, db, me)
    rec = Recorder(
        db,
        host=me,
        notifier=EgressAdapter(dispatcher, s.service.public_url),
        raw_days=s.egress.raw_days,
        alert_window=s.egress.alert_window,
    )
    res = ProviderResolver(dns=s.dns)
    path = socket_path or s.egress.socket
    total = 0
    warned = False
    try:
        while True:
            try:
                total += do_ingest(
                    path,
                    rec,
                    resolver=res,
                    on_hello=lambda m: typer.echo(
                        f"egress: recording events of {m.get('host')} "
                        f"(collectors: {', '.join(m.get('collectors', []))})",
                        err=True,
                    ),
                )
                typer.echo(
                    f"egress: collector closed the socket; {total} events recorded", err=True
                )
                warned = False
            except MailwardenError as exc:
                if once:
                    raise
                if not warned:
                    typer.echo(f"egress: {exc}; retrying every 2 s", err=True)
                    warned = True
            if once:
                return
            time.sleep(2.0)
    except KeyboardInterrupt:
        pass
    finally:
        res.close()
        dispatcher.close()


_CONTROL = dict.fromkeys([*range(0x20), 0x7F, *range(0x80, 0xA0)], "?")


def _printable(value: object) -> str:
    """Text from a process (argv, paths) made safe for a terminal: no escape sequences."""
    return str(value).translate(_CONTROL)


def _since(hours: float) -> float:
    return time.time() - hours * 3600 if hours > 0 else 0.0


@eg.command()
def top(
    hours: Annotated[float, typer.Option(help="only rows seen in the last N hours (0 = all)")] = 24,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    host: HostFilter = "",
) -> None:
    """Busiest (host, user, program, script, port, provider, allowed) rows from the store."""
    from mailwarden.egress.summary import top as q
    from mailwarden.store.db import open_engine

    rows = q(
        open_engine(_settings().db_url()), since=_since(hours), limit=limit, host=check_host(host)
    )
    if as_json:
        typer.echo(json.dumps({"rows": rows}))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    fleet = len({r["host"] for r in rows}) > 1
    cols = ["user", "exe / unit", "script", "port", "provider", "allowed", "count", "dests"]
    t = Table(*(["host"] if fleet else []), *cols, "last seen")
    for r in rows:
        # names and paths come from other users' processes: plain text, never rich markup
        t.add_row(
            *([Text(_printable(r["host"]))] if fleet else []),
            Text(_printable(r["user"] or str(r["uid"]))),
            Text(_printable(r["unit"] or r["exe"])),
            Text(_printable(r["script"])),
            str(r["port"]),
            Text(_printable(r["provider"])),
            "yes" if r["allowed"] else "[red]no[/red]",
            str(r["count"]),
            str(r["destinations"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_seen"])),
        )
    Console().print(t)


@eg.command("alerts")
def alerts_cmd(
    hours: Annotated[float, typer.Option(help="last N hours (0 = all)")] = 24,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    host: HostFilter = "",
) -> None:
    """Egress alerts (one per process and port per window) with their evidence."""
    from mailwarden.egress.summary import alerts as q
    from mailwarden.store.db import open_engine

    rows = q(open_engine(_settings().db_url()), since=_since(hours), host=check_host(host))
    fleet = len({a["host"] for a in rows}) > 1
    if as_json:
        typer.echo(json.dumps({"alerts": rows}))
        return
    for a in rows:
        ev = a["evidence"]
        typer.echo(
            _printable(
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(a['raised_at']))} "
                + (f"{a['host']} " if fleet else "")
                + f"{a['user'] or a['uid']} {a['script'] or a['exe'] or a['unit']} "
                f"port {a['port']}: {a['count']} attempts ({a['blocked']} blocked) "
                f"pid {ev.get('pid')} "
                f"cmdline {' '.join(ev.get('cmdline', []))!r} "
                f"to {', '.join(ev.get('destinations', []))}"
            )
        )


@eg.command()
def watch(
    socket_path: Socket = None,
    as_json: Annotated[bool, typer.Option("--json", help="raw JSON lines")] = False,
    count: Annotated[int, typer.Option(help="stop after N events (0 = never)")] = 0,
) -> None:
    """Live view of the collector's events."""
    from mailwarden.egress.client import read_messages
    from mailwarden.egress.wire import decode
    from mailwarden.errors import ValidationError

    n = 0
    for msg in read_messages(socket_path or _settings().egress.socket):
        kind = msg.get("type")
        if as_json and kind in ("connect", "hello", "stats"):
            typer.echo(json.dumps(msg))
        elif kind == "hello":
            typer.echo(
                f"# collectors: {', '.join(msg.get('collectors', []))}; ports "
                f"{', '.join(map(str, msg.get('ports', [])))}",
                err=True,
            )
        elif kind == "connect":
            try:
                ev = decode(msg)
            except ValidationError as exc:
                typer.echo(f"# skipped: {exc}", err=True)
                continue
            flag = {"blocked": "BLOCKED", "allowed": "allowed", "monitored": "monitored"}.get(
                ev.verdict, "-"
            )
            line = (
                f"{time.strftime('%H:%M:%S', time.localtime(ev.ts))} {flag:9} "
                f"{ev.user or ev.uid}({ev.pid}) {ev.script or ev.exe or ev.comm} -> "
                f"{ev.daddr}:{ev.dport} [{ev.source}]" + (" mta" if ev.mta else "")
            )
            typer.echo(_printable(line))
        if kind == "connect":
            n += 1
            if count and n >= count:
                return


@eg.command()
def doctor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Which collectors work on this host, and why the others don't. Exit 0 if eBPF works,
    1 if only a fallback does, 2 if none."""
    from mailwarden.egress.doctor import probe_all

    probes = probe_all(_settings().egress)
    ebpf = any(p.ok for p in probes if p.name.startswith("ebpf:"))
    fallback = any(p.ok for p in probes if p.name.startswith(("nflog:", "sockdiag")))
    if as_json:
        typer.echo(
            json.dumps(
                {"probes": [{"name": p.name, "ok": p.ok, "detail": p.detail} for p in probes]}
            )
        )
    else:
        for p in probes:
            typer.echo(f"{'ok ' if p.ok else 'NO '} {p.name:18} {p.detail}")
    raise typer.Exit(0 if ebpf else 1 if fallback else 2)
