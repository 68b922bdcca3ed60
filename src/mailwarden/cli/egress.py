"""``mailwarden egress``: run the privileged collector, record its events, show summaries,
alerts and a live view, and say which collectors work here (``doctor``)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from mailwarden.cli import app

if TYPE_CHECKING:
    from mailwarden.config import Settings

eg = typer.Typer(
    help="Who opens connections to remote SMTP ports (per process and user).", no_args_is_help=True
)
app.add_typer(eg, name="egress")

Socket = Annotated[str | None, typer.Option("--socket", help="collector socket path")]


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
def ingest(socket_path: Socket = None) -> None:
    """Record the collector's events in the store (summaries, raw events, alerts). Unprivileged."""
    import logging

    from mailwarden.egress.client import ProviderResolver
    from mailwarden.egress.client import ingest as do_ingest
    from mailwarden.egress.summary import (
        LogNotifier,
        MultiNotifier,
        Notifier,
        Recorder,
        WebhookNotifier,
    )
    from mailwarden.store.db import open_engine

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    s = _settings()
    notifiers: list[Notifier] = [LogNotifier()]
    if s.egress.webhook:
        notifiers.append(WebhookNotifier(s.egress.webhook))
    rec = Recorder(
        open_engine(s.db_url()),
        notifier=MultiNotifier(notifiers),
        raw_days=s.egress.raw_days,
        alert_window=s.egress.alert_window,
    )
    res = ProviderResolver(nameservers=s.dns.nameservers, port=s.dns.port, timeout=s.dns.timeout)
    try:
        n = do_ingest(
            socket_path or s.egress.socket,
            rec,
            resolver=res,
            on_hello=lambda m: typer.echo(
                f"egress: recording events of {m.get('host')} "
                f"(collectors: {', '.join(m.get('collectors', []))})",
                err=True,
            ),
        )
    except KeyboardInterrupt:
        n = -1
    finally:
        res.close()
    if n >= 0:
        typer.echo(f"egress: collector closed the socket; {n} events recorded", err=True)


def _since(hours: float) -> float:
    return time.time() - hours * 3600 if hours > 0 else 0.0


@eg.command()
def top(
    hours: Annotated[float, typer.Option(help="only rows seen in the last N hours (0 = all)")] = 24,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Busiest (user, program, script, port, provider, allowed) rows from the store."""
    from mailwarden.egress.summary import top as q
    from mailwarden.store.db import open_engine

    rows = q(open_engine(_settings().db_url()), since=_since(hours), limit=limit)
    if as_json:
        typer.echo(json.dumps({"rows": rows}))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(
        "user", "exe / unit", "script", "port", "provider", "allowed", "count", "dests", "last seen"
    )
    for r in rows:
        t.add_row(
            r["user"] or str(r["uid"]),
            r["unit"] or r["exe"],
            r["script"],
            str(r["port"]),
            r["provider"],
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
) -> None:
    """Egress alerts (one per process and port per window) with their evidence."""
    from mailwarden.egress.summary import alerts as q
    from mailwarden.store.db import open_engine

    rows = q(open_engine(_settings().db_url()), since=_since(hours))
    if as_json:
        typer.echo(json.dumps({"alerts": rows}))
        return
    for a in rows:
        ev = a["evidence"]
        typer.echo(
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(a['raised_at']))} "
            f"{a['user'] or a['uid']} {a['script'] or a['exe'] or a['unit']} port {a['port']}: "
            f"{a['count']} attempts ({a['blocked']} blocked) pid {ev.get('pid')} "
            f"cmdline {' '.join(ev.get('cmdline', []))!r} "
            f"to {', '.join(ev.get('destinations', []))}"
        )


@eg.command()
def watch(
    socket_path: Socket = None,
    as_json: Annotated[bool, typer.Option("--json", help="raw JSON lines")] = False,
    count: Annotated[int, typer.Option(help="stop after N events (0 = never)")] = 0,
) -> None:
    """Live view of the collector's events."""
    from mailwarden.egress.client import read_messages

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
            who = msg.get("script") or msg.get("exe") or msg.get("comm")
            flag = {"blocked": "BLOCKED", "allowed": "allowed", "monitored": "monitored"}.get(
                msg.get("verdict", ""), "-"
            )
            typer.echo(
                f"{time.strftime('%H:%M:%S', time.localtime(msg['ts']))} {flag:9} "
                f"{msg.get('user') or msg.get('uid')}({msg.get('pid')}) {who} -> "
                f"{msg['daddr']}:{msg['dport']} [{msg.get('source')}]"
                + (" mta" if msg.get("mta") else "")
            )
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
