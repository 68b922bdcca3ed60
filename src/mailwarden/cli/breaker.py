"""``mailwarden breaker ...``: see and steer the per-provider circuit breaker.

* ``status [--json]``: per provider state, since, until, the reply and rule that tripped it,
  parked/held recipients (from ``postqueue -j``), issuer, delisting URL;
* ``open PROVIDER [--for 2h] --reason TEXT``: park a provider by hand (without ``--for``: until
  closed by hand);
* ``close PROVIDER [--no-release]``: close it and release its parked mail, paced;
* ``history [--provider P] [--limit N] [--json]``: every transition, newest first;
* ``replay LOG... [--json]``: a dry run over old logs: which rules would have fired when, and
  which rules never matched.

State lives in the store (``[store] url``); the socketmap server reads the enforcement view
this module and ``mailwarden run`` publish. :func:`build` wires the engine for both.
Exit codes: 0 ok, 1 (status) some provider is not closed, 2 error.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mailwarden.cli import app
from mailwarden.errors import EXIT_OK, EXIT_WARNING, ConfigError

if TYPE_CHECKING:
    from mailwarden.breaker.engine import Engine
    from mailwarden.breaker.notify import Dispatcher
    from mailwarden.config import Settings
    from mailwarden.postfix.control import Postfix
    from mailwarden.postfix.hooks import PostfixHooks
    from mailwarden.postfix.queue import QueueActuator

breaker_app = typer.Typer(help="The per-provider circuit breaker.", no_args_is_help=True)
app.add_typer(breaker_app, name="breaker")

_PROVIDER = re.compile(r"^[a-z0-9][a-z0-9.-]{0,253}$")


def view_path(settings: Settings) -> Path:
    """Where the enforcement view lives (read by the socketmap server)."""
    return settings.state_dir / "breaker-view.json"


@dataclass
class Wiring:
    """Everything the engine acts through, built from the settings."""

    settings: Settings
    engine: Engine
    pf: Postfix
    queue: QueueActuator
    hooks: PostfixHooks
    dispatcher: Dispatcher

    def close(self) -> None:
        self.hooks.join(timeout=5)
        self.dispatcher.close()


def build(settings: Settings, *, background: bool = True) -> Wiring:
    """The engine with store, view publisher, Postfix hooks and alert channels."""
    from mailwarden.breaker.engine import Engine
    from mailwarden.breaker.machine import Machine
    from mailwarden.breaker.notify import (
        Dispatcher,
        LogNotifier,
        MailNotifier,
        Notifier,
        WebhookNotifier,
    )
    from mailwarden.breaker.rules import RuleSet
    from mailwarden.classify import Classifier
    from mailwarden.postfix.control import Postfix
    from mailwarden.postfix.hooks import PostfixHooks
    from mailwarden.postfix.mx import SyncMx
    from mailwarden.postfix.queue import QueueActuator
    from mailwarden.postfix.setup import SLOW_PREFIX, Setup
    from mailwarden.postfix.socketmap import write_view
    from mailwarden.store.breaker import BreakerStore
    from mailwarden.store.db import open_engine

    b = settings.breaker
    classifier = Classifier.load()
    rules = RuleSet.load()
    store = BreakerStore(open_engine(settings.db_url()))
    machine = Machine(
        rules,
        probe_recipients=b.probe_recipients,
        probe_timeout=b.probe_timeout,
        escalation_memory=b.escalation_memory,
    )
    vp = view_path(settings)

    def publish(view: dict[str, dict[str, Any]], never: list[str]) -> None:
        write_view(vp, view, never)

    pf = Postfix(b.postfix_config)
    mx = SyncMx(settings.dns.nameservers, settings.dns.port, settings.dns.timeout)

    def provider_of_domain(domain: str) -> str:
        hosts = mx.hosts(domain)
        return classifier.provider_for_host(hosts[0]) if hosts else ""

    queue = QueueActuator(
        pf, provider_of_domain, marker=classifier.breaker_marker, hold_margin=b.hold_margin
    )

    def installed_clones() -> set[str]:
        st = Setup(pf, socketmap_host=b.socketmap_host, socketmap_port=b.socketmap_port)
        try:
            added = st.load_state().get("services_added", [])
        except Exception:
            return set()
        return {k.split("/")[0] for k in added if k.startswith(SLOW_PREFIX)}

    channels: list[Notifier] = [LogNotifier()]
    if b.webhook_url:
        channels.append(WebhookNotifier(b.webhook_url))
    if b.admin_mail:
        channels.append(MailNotifier(b.admin_mail, relay=b.mail_relay))
    dispatcher = Dispatcher(channels)
    never = list(b.never_park) + ([b.admin_mail] if b.admin_mail else [])
    engine = Engine(
        rules=rules,
        classifier=classifier,
        machine=machine,
        store=store,
        publisher=publish,
        notify=dispatcher.notify,
        enabled=b.enabled,
        never_park=never,
        installed_clones=installed_clones,
        our_ips=frozenset(settings.identity.ips) if len(settings.identity.ips) > 1 else frozenset(),
        release_min_rate=b.release_min_rate,
        release_rate=b.release_rate,
    )
    hooks = PostfixHooks(
        pf,
        queue,
        state_of=lambda p: engine.machine.get(p).state,
        reload_on_trip=b.reload_on_trip,
        background=background,
    )
    engine.hooks = hooks
    engine.load()
    return Wiring(settings, engine, pf, queue, hooks, dispatcher)


def _settings() -> Settings:
    from mailwarden.config import load_settings

    return load_settings()


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _check_provider(name: str) -> str:
    n = name.strip().lower()
    if not _PROVIDER.fullmatch(n):
        raise ConfigError(f"bad provider name {name!r} (a provider table name or a domain)")
    return n


@breaker_app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    queue: bool = typer.Option(True, "--queue/--no-queue", help="Count parked mail (postqueue)."),
) -> None:
    """Per provider: state, since, until, why, parked recipients, issuer, delisting URL."""
    w = build(_settings())
    try:
        states = sorted(w.engine.machine.states.values(), key=lambda s: (s.provider, s.ip))
        inv: dict[str, Any] = {}
        if queue:
            try:
                inv = w.queue.inventory()
            except Exception as exc:  # Postfix not running / not installed: show the rest
                typer.echo(f"mailwarden: queue not read: {exc}", err=True)
        rows = []
        for s in states:
            pq = inv.get(s.provider)
            rows.append(
                {
                    "provider": s.provider,
                    "ip": s.ip,
                    "state": s.state,
                    "since": s.since,
                    "until": s.until,
                    "rule": s.rule,
                    "reply": s.reply,
                    "issuer": s.issuer,
                    "url": s.url,
                    "note": s.note,
                    "level": s.level,
                    "trips": s.trips,
                    "parked": pq.parked if pq else 0,
                    "held": pq.held if pq else 0,
                }
            )
        for name, pq in sorted(inv.items()):
            if (pq.parked or pq.held) and not any(r["provider"] == name for r in rows):
                rows.append(
                    {
                        "provider": name,
                        "ip": "",
                        "state": "closed",
                        "since": None,
                        "until": None,
                        "rule": "",
                        "reply": "",
                        "issuer": "",
                        "url": "",
                        "note": "",
                        "level": 0,
                        "trips": 0,
                        "parked": pq.parked,
                        "held": pq.held,
                    }
                )
        if as_json:
            typer.echo(json.dumps({"providers": rows}, indent=2))
        else:
            _status_table(rows)
    finally:
        w.close()
    raise typer.Exit(EXIT_WARNING if any(r["state"] != "closed" for r in rows) else EXIT_OK)


def _status_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from mailwarden.breaker.rules import format_duration

    con = Console()
    if not rows:
        con.print("No breaker has ever tripped.")
        return
    t = Table(title="Circuit breakers")
    for col in ("provider", "state", "since", "until", "parked", "why"):
        t.add_column(col, overflow="fold")
    now = time.time()
    for r in rows:
        until = "manual" if r["state"] == "open" and r["until"] is None else ""
        if r["until"] is not None:
            until = f"{_fmt_time(r['until'])} (in {format_duration(max(0, r['until'] - now))})"
        why = r["rule"] or (f"by hand: {r['note']}" if r["note"] else "")
        if r["issuer"]:
            why += f"\nissuer {r['issuer']}: affects every receiver using that list"
        if r["reply"]:
            why += f"\n{r['reply'][:200]}"
        if r["url"]:
            why += f"\n{r['url']}"
        style = {"open": "bold red", "probing": "yellow", "slowed": "magenta"}.get(r["state"], "")
        name = r["provider"] + (f" ({r['ip']})" if r["ip"] else "")
        parked = str(r["parked"]) + (f" (+{r['held']} held)" if r["held"] else "")
        t.add_row(
            name, f"[{style}]{r['state']}[/]" if style else r["state"], _fmt_time(r["since"]),
            until, parked, why,
        )  # fmt: skip
    con.print(t)


@breaker_app.command("open")
def open_(
    provider: str = typer.Argument(..., help="Provider name (as in status) or a domain."),
    duration: str = typer.Option(
        "", "--for", help="How long (90m, 2h, 1d); default: until closed."
    ),
    reason: str = typer.Option(..., "--reason", help="Why (shown to Postfix and in alerts)."),
) -> None:
    """Park a provider by hand."""
    from mailwarden.breaker.rules import REASON_TEXT, parse_duration

    name = _check_provider(provider)
    if not REASON_TEXT.fullmatch(reason):
        raise ConfigError(f"--reason must match {REASON_TEXT.pattern} (it goes into Postfix)")
    try:
        secs = parse_duration(duration) if duration else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if secs is not None and secs == float("inf"):
        secs = None
    w = build(_settings(), background=False)
    try:
        t = w.engine.open(name, duration=secs, note=reason)
    finally:
        w.close()
    until = f"until {_fmt_time(t.until)}" if t.until else "until closed by hand"
    typer.echo(f"{name}: open {until}")


@breaker_app.command("close")
def close(
    provider: str = typer.Argument(...),
    note: str = typer.Option("", "--note", help="Why (kept in the history)."),
    release: bool = typer.Option(True, "--release/--no-release", help="Release parked mail."),
) -> None:
    """Close a provider's breaker and release its parked mail, paced."""
    name = _check_provider(provider)
    w = build(_settings(), background=False)
    try:
        if not release:
            w.engine.hooks = None
        trs = w.engine.close(name, note=note)
    finally:
        w.close()
    if not trs:
        typer.echo(f"{name}: already closed")
    else:
        typer.echo(
            f"{name}: closed" + (f"; released {w.queue.released} recipients" if release else "")
        )


@breaker_app.command("history")
def history(
    provider: str = typer.Option("", "--provider", "-p"),
    limit: int = typer.Option(50, "--limit", "-n", min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every transition, newest first."""
    from mailwarden.store.breaker import BreakerStore
    from mailwarden.store.db import open_engine

    settings = _settings()
    rows = BreakerStore(open_engine(settings.db_url())).history(
        _check_provider(provider) if provider else "", limit
    )
    if as_json:
        typer.echo(json.dumps({"transitions": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Breaker history")
    for col in ("time", "provider", "change", "by", "until", "reply"):
        t.add_column(col, overflow="fold")
    for r in rows:
        by = r["rule"] or r["actor"]
        t.add_row(
            _fmt_time(r["ts"]), r["provider"] + (f" ({r['ip']})" if r["ip"] else ""),
            f"{r['old']} -> {r['new']}", by, _fmt_time(r["until"]), (r["reply"] or r["note"])[:160],
        )  # fmt: skip
    Console().print(t)


@breaker_app.command("replay")
def replay(
    logs: list[Path] = typer.Argument(..., help="Postfix logs (rotated/compressed ok)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dry run over old logs: which rules would have fired when; which never matched."""
    from mailwarden.breaker.replay import replay_files

    settings = _settings()
    result = replay_files(
        logs,
        probe_recipients=settings.breaker.probe_recipients,
        probe_timeout=settings.breaker.probe_timeout,
    )
    doc = result.to_json()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"Rules that would have fired ({len(doc['trips'])})")
    for col in ("time", "provider", "rule", "to", "reply"):
        t.add_column(col, overflow="fold")
    for tr in doc["trips"]:
        t.add_row(_fmt_time(tr["at"]), tr["provider"], tr["rule"], tr["to"], tr["reply"][:160])
    con.print(t)
    con.print(
        f"{result.deliveries} delivery attempts, {result.matched} matched a rule, "
        f"{result.unparsed} unparsed lines."
    )
    if doc["never_matched"]:
        con.print("Rules that never matched: " + ", ".join(doc["never_matched"]))
