"""``mailwarden breaker ...``: see and steer the per-provider circuit breaker.

* ``status [--json] [--host H]``: per host and provider state, since, until, the reply and rule
  that tripped it, parked/held recipients (this host's ``postqueue -j``), issuer, delisting URL;
* ``open PROVIDER [--for 2h] --reason TEXT [--host H]``: park a provider by hand on this host
  (without ``--for``: until closed by hand);
* ``close PROVIDER [--no-release] [--host H]``: close it on this host and release its parked
  mail, paced;
* ``history [--provider P] [--limit N] [--json] [--host H]``: every transition, newest first;
* ``replay LOG... [--json]``: a dry run over old logs: which rules would have fired when, and
  which rules never matched.

State lives in the store (``[store] url``), keyed by host: each host's breakers act on its own
Postfix, so ``open``/``close`` change this host's (the daemon's name: ``[log] host`` or the host
name; ``--host`` when ``mailwarden run --host`` named it otherwise), while ``status`` and
``history`` show every host sharing the store unless ``--host`` picks one. The socketmap server
reads the enforcement view this module and ``mailwarden run`` publish. :func:`build` wires the
engine for both, with the one alert dispatcher of :mod:`mailwarden.report.alerts`.
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
    from sqlalchemy import Engine as SqlEngine

    from mailwarden.breaker.engine import Engine
    from mailwarden.config import Settings
    from mailwarden.postfix.control import Postfix
    from mailwarden.postfix.hooks import PostfixHooks
    from mailwarden.postfix.queue import QueueActuator
    from mailwarden.report.alerts import Dispatcher
    from mailwarden.store.breaker import BreakerStore

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
    host: str
    engine: Engine
    store: BreakerStore
    pf: Postfix
    queue: QueueActuator
    hooks: PostfixHooks
    dispatcher: Dispatcher
    own_dispatcher: bool = True

    def close(self) -> None:
        self.hooks.join(timeout=5)
        if self.own_dispatcher:
            self.dispatcher.close()

    def privilege_refused(self, action: str, exc: Exception) -> None:
        """A Postfix action of the breaker was refused for want of root: alert (once per
        action and dedup window). Parking itself goes on; releasing and holding do not."""
        from mailwarden.report.alerts import Alert

        kind = action.split("-")[0]
        self.dispatcher.emit(
            Alert(
                kind="service",
                key=f"service:{self.host}:privilege:{kind}",
                severity="critical",
                title=f"breaker action {action} refused: no root for Postfix on {self.host}",
                text=f"{exc}\nParking (the lookup's answer) works unprivileged, but parked mail "
                "is neither held before it expires nor released, and Postfix is not reloaded on "
                "a trip, until sudo is set up (docs/service.md, privileges) or "
                '[breaker] privilege = "none" runs as root.',
                host=self.host,
                data={"action": action, "error": str(exc)[:500]},
            )
        )


def build(
    settings: Settings,
    *,
    host: str = "",
    background: bool = True,
    dispatcher: Dispatcher | None = None,
    store_engine: SqlEngine | None = None,
) -> Wiring:
    """The engine of this host (``host``: ``--host``, else ``[log] host``, else the host name)
    with its store rows, view publisher, Postfix hooks and the alert dispatcher.

    Transitions are alerted through ``dispatcher`` (the daemon's), else through a dispatcher of
    their own made by :func:`mailwarden.report.alerts.dispatcher_from_settings`: the same
    channels, dedup and rate limits as ``mailwarden run``, whoever changes a breaker."""
    from mailwarden.breaker.engine import Engine
    from mailwarden.breaker.machine import Machine
    from mailwarden.breaker.rules import RuleSet
    from mailwarden.classify import Classifier
    from mailwarden.dnsutil import resolver
    from mailwarden.postfix.control import Postfix
    from mailwarden.postfix.hooks import PostfixHooks
    from mailwarden.postfix.mx import SyncMx
    from mailwarden.postfix.queue import QueueActuator
    from mailwarden.postfix.setup import SLOW_PREFIX, Setup
    from mailwarden.postfix.socketmap import write_view
    from mailwarden.report.alerts import dispatcher_from_settings
    from mailwarden.report.channels import never_park
    from mailwarden.service.daemon import host_id
    from mailwarden.store.breaker import BreakerStore
    from mailwarden.store.db import open_engine

    b = settings.breaker
    me = host_id(settings, host)
    classifier = Classifier.load()
    rules = RuleSet.load()
    db = store_engine if store_engine is not None else open_engine(settings.db_url())
    store = BreakerStore(db, me)
    store.claim_unkeyed()
    machine = Machine(
        rules,
        probe_recipients=b.probe_recipients,
        probe_timeout=b.probe_timeout,
        escalation_memory=b.escalation_memory,
    )
    vp = view_path(settings)

    def publish(view: dict[str, dict[str, Any]], never: list[str]) -> None:
        write_view(vp, view, never)

    pf = Postfix(b.postfix_config, privilege=b.privilege)
    mx = SyncMx(resolver(settings.dns))

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

    own = dispatcher is None
    disp = dispatcher if dispatcher is not None else dispatcher_from_settings(settings, db, me)
    public_url = settings.service.public_url
    engine = Engine(
        rules=rules,
        classifier=classifier,
        machine=machine,
        store=store,
        publisher=publish,
        notify=lambda trs: disp.transitions(trs, public_url),
        enabled=b.enabled,
        never_park=sorted(set(b.never_park) | set(never_park(settings))),
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
    w = Wiring(settings, me, engine, store, pf, queue, hooks, disp, own)
    hooks.on_privilege_error = w.privilege_refused
    return w


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


_HOST_HELP = (
    "This host's name in the store (default: \\[log] host, else the host name; the name "
    "`mailwarden run --host` gives its rows)."
)


def _host_option(help_text: str = _HOST_HELP) -> Any:
    return typer.Option("", "--host", help=help_text)


@breaker_app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    queue: bool = typer.Option(True, "--queue/--no-queue", help="Count parked mail (postqueue)."),
    host: str = typer.Option(
        "", "--host", help="Only this host's breakers (default: every host sharing the store)."
    ),
) -> None:
    """Per host and provider: state, since, until, why, parked recipients, issuer, delisting
    URL. Parked mail is counted in this host's queue."""
    from mailwarden.store.breaker import fleet_states

    w = build(_settings(), background=False)
    try:
        states = fleet_states(w.store.engine, check_host(host))
        inv: dict[str, Any] = {}
        if queue and (not host or host == w.host):
            try:
                inv = w.queue.inventory()
            except Exception as exc:  # Postfix not running / not installed: show the rest
                typer.echo(f"mailwarden: queue not read: {exc}", err=True)
        rows = []
        for s in states:
            pq = inv.get(s["provider"]) if s["host"] == w.host else None
            rows.append(
                {
                    "host": s["host"],
                    **{k: s[k] for k in _STATUS_FIELDS},
                    "parked": pq.parked if pq else 0,
                    "held": pq.held if pq else 0,
                }
            )
        for name, pq in sorted(inv.items()):
            if (pq.parked or pq.held) and not any(
                r["provider"] == name and r["host"] == w.host for r in rows
            ):
                rows.append(
                    {
                        "host": w.host,
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
            typer.echo(json.dumps({"host": w.host, "providers": rows}, indent=2))
        else:
            _status_table(rows)
    finally:
        w.close()
    raise typer.Exit(EXIT_WARNING if any(r["state"] != "closed" for r in rows) else EXIT_OK)


_STATUS_FIELDS = (
    "provider",
    "ip",
    "state",
    "since",
    "until",
    "rule",
    "reply",
    "issuer",
    "url",
    "note",
    "level",
    "trips",
)


_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def check_host(name: str) -> str:
    """A host name as the store keys rows (``""``: none given)."""
    if name and not _HOST.fullmatch(name):
        raise ConfigError(f"bad host name {name!r} (letters, digits, '.', '_', '-')")
    return name


def _status_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from mailwarden.breaker.rules import format_duration

    con = Console()
    if not rows:
        con.print("No breaker has ever tripped.")
        return
    fleet = len({r["host"] for r in rows}) > 1
    t = Table(title="Circuit breakers")
    for col in (("host",) if fleet else ()) + (
        "provider",
        "state",
        "since",
        "until",
        "parked",
        "why",
    ):
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
        cells: list[Text | str] = [
            Text(name), Text(r["state"], style=style), _fmt_time(r["since"]), until, parked,
            Text(why),
        ]  # fmt: skip
        t.add_row(*(([Text(r["host"])] if fleet else []) + cells))
    con.print(t)


@breaker_app.command("open")
def open_(
    provider: str = typer.Argument(..., help="Provider name (as in status) or a domain."),
    duration: str = typer.Option(
        "", "--for", help="How long (90m, 2h, 1d); default: until closed."
    ),
    reason: str = typer.Option(..., "--reason", help="Why (shown to Postfix and in alerts)."),
    host: str = _host_option(),
) -> None:
    """Park a provider by hand, on this host (its Postfix)."""
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
    w = build(_settings(), host=check_host(host), background=False)
    try:
        t = w.engine.open(name, duration=secs, note=reason)
    finally:
        w.close()
    until = f"until {_fmt_time(t.until)}" if t.until else "until closed by hand"
    typer.echo(f"{name}: open {until} on {w.host}")


@breaker_app.command("close")
def close(
    provider: str = typer.Argument(...),
    note: str = typer.Option("", "--note", help="Why (kept in the history)."),
    release: bool = typer.Option(True, "--release/--no-release", help="Release parked mail."),
    host: str = _host_option(),
) -> None:
    """Close a provider's breaker on this host and release its parked mail, paced."""
    from mailwarden.store.breaker import fleet_states

    name = _check_provider(provider)
    w = build(_settings(), host=check_host(host), background=False)
    try:
        if not release:
            w.engine.hooks = None
        trs = w.engine.close(name, note=note)
        elsewhere = []
        if not trs:
            elsewhere = sorted(
                {
                    r["host"]
                    for r in fleet_states(w.store.engine)
                    if r["provider"] == name and r["state"] != "closed" and r["host"] != w.host
                }
            )
    finally:
        w.close()
    if not trs:
        typer.echo(f"{name}: already closed on {w.host}")
        if elsewhere:
            typer.echo(
                f"mailwarden: {name} is not closed on {', '.join(elsewhere)}: close it on that "
                "host (each host's breaker acts on its own Postfix), or pass --host if this "
                "host's daemon runs under that name",
                err=True,
            )
    else:
        typer.echo(
            f"{name}: closed on {w.host}"
            + (f"; released {w.queue.released} recipients" if release else "")
        )


@breaker_app.command("history")
def history(
    provider: str = typer.Option("", "--provider", "-p"),
    limit: int = typer.Option(50, "--limit", "-n", min=1),
    as_json: bool = typer.Option(False, "--json"),
    host: str = typer.Option(
        "", "--host", help="Only this host's transitions (default: every host)."
    ),
) -> None:
    """Every transition, newest first."""
    from mailwarden.store.breaker import fleet_history
    from mailwarden.store.db import open_engine

    settings = _settings()
    rows = fleet_history(
        open_engine(settings.db_url()),
        host=check_host(host),
        provider=_check_provider(provider) if provider else "",
        limit=limit,
    )
    if as_json:
        typer.echo(json.dumps({"transitions": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    fleet = len({r["host"] for r in rows}) > 1
    t = Table(title="Breaker history")
    for col in (("host",) if fleet else ()) + (
        "time",
        "provider",
        "change",
        "by",
        "until",
        "reply",
    ):
        t.add_column(col, overflow="fold")
    for r in rows:
        by = r["rule"] or r["actor"]
        cells: list[Text | str] = [
            _fmt_time(r["ts"]), Text(r["provider"] + (f" ({r['ip']})" if r["ip"] else "")),
            f"{r['old']} -> {r['new']}", by, _fmt_time(r["until"]),
            Text((r["reply"] or r["note"])[:160]),
        ]  # fmt: skip
        t.add_row(*(([Text(r["host"])] if fleet else []) + cells))
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
