"""Rich rendering of the analyze report document (see :mod:`mailwarden.report.analyze`).

Readable in 80 columns: narrow numeric columns, long texts (reply samples, URLs) on their own
indented lines, folded rather than cut where they matter. Reads only the JSON document, so the
human and the ``--json`` outputs cannot disagree.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

MAX_PROVIDERS = 20
MAX_KINDS = 8
MAX_ORIGINS = 15
MAX_INBOUND = 10
SAMPLE_CHARS = 300

_SCOPE_STYLE = {"ours": "bold red", "recipient": "yellow", "transient": "cyan"}


def _hm(iso: str | None) -> str:
    """``2026-11-27T17:19:54Z`` -> ``11-27 17:19``."""
    if not iso:
        return "-"
    return f"{iso[5:10]} {iso[11:16]}"


def _span(first: str | None, last: str | None) -> str:
    """``11-27 17:19–17:25``, or with both dates when they differ."""
    a, b = _hm(first), _hm(last)
    if a == b:
        return a
    if a[:5] == b[:5]:
        return f"{a}–{b[6:]}"
    return f"{a} – {b}"


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%" if x else "0"


def _short(s: str, n: int = SAMPLE_CHARS) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def render(doc: dict[str, Any], console: Console) -> None:
    """Print the whole report."""
    _header(doc, console)
    _providers(doc, console)
    _rejections(doc, console)
    _internal(doc, console)
    _origins(doc, console)
    _inbound(doc, console)
    _unparsed(doc, console)
    _store(doc, console)


def _header(doc: dict[str, Any], c: Console) -> None:
    lines, per, tot = doc["lines"], doc["period"], doc["totals"]
    c.rule("[bold]mailwarden analyze[/]")
    for s in doc["sources"]:
        c.print(f"[dim]source[/] {escape(s['path'])}  [dim]({s['bytes']:,} bytes)[/]")
    for e in doc["errors"]:
        c.print(f"[bold red]error[/] {escape(e)}")
    c.print(
        f"[dim]period[/] {per['first'] or '-'} [dim]to[/] {per['last'] or '-'}"
        + (f"  [dim](since {per['since']})[/]" if per["since"] else "")
        + (f"  [dim](until {per['until']})[/]" if per["until"] else "")
    )
    unp = lines["unparsed"]
    c.print(
        f"[dim]lines[/] {lines['total']:,} total, {lines['parsed']:,} parsed, "
        f"{lines['ignored']:,} ignored, "
        + (f"[bold yellow]{unp:,} unparsed[/]" if unp else "0 unparsed")
        + (f", {lines['foreign']:,} other programs" if lines["foreign"] else "")
        + (f", {lines['outside_period']:,} outside the period" if lines["outside_period"] else "")
    )
    c.print(
        f"[dim]mail[/] {tot['messages']:,} messages, {tot['recipients']:,} recipients: "
        f"[green]{tot['delivered']:,} delivered[/], [yellow]{tot['deferred']:,} deferred[/], "
        f"[red]{tot['bounced']:,} bounced[/]"
    )


def _providers(doc: dict[str, Any], c: Console) -> None:
    provs = doc["providers"]
    if not provs:
        c.print("\nNo delivery attempts in this log.")
        return
    t = Table(title="Recipients by provider (final state)", title_justify="left", expand=False)
    t.add_column("provider", overflow="fold", max_width=30)
    t.add_column("rcpts", justify="right")
    t.add_column("delivered", justify="right", style="green")
    t.add_column("deferred", justify="right", style="yellow")
    t.add_column("bounced", justify="right", style="red")
    t.add_column("rejects", justify="right")
    for p in provs[:MAX_PROVIDERS]:
        n_rej = sum(k["count"] for k in p["rejections"])
        t.add_row(
            escape(p["provider"]) + ("" if p["known"] else " [dim]*[/]"),
            f"{p['recipients']:,}",
            f"{p['delivered']:,}",
            f"{p['deferred']:,}",
            f"{p['bounced']:,}" + (f" [dim]({p['expired']} exp)[/]" if p["expired"] else ""),
            f"{n_rej:,}",
        )
    c.print()
    c.print(t)
    rest = provs[MAX_PROVIDERS:]
    if rest:
        c.print(f"[dim]… and {len(rest)} more providers (see --json)[/]")
    if any(not p["known"] for p in provs):
        c.print("[dim]* not in the provider tables: named by the domain of the relay[/]")


def _rejections(doc: dict[str, Any], c: Console) -> None:
    provs = [p for p in doc["providers"] if p["rejections"]]
    if not provs:
        return
    c.print()
    c.rule("Rejections by provider (attempts and MX replies)", align="left")
    for p in provs[:MAX_PROVIDERS]:
        total = sum(k["count"] for k in p["rejections"])
        c.print(f"\n[bold]{escape(p['provider'])}[/]  [dim]{total:,} rejections[/]")
        for k in p["rejections"][:MAX_KINDS]:
            scope = k["scope"] or "-"
            code = " ".join(x for x in (str(k["code"] or ""), k["enhanced"]) if x) or "-"
            head = Text.assemble(
                (f"{k['count']:>7,}  ", "bold"),
                (f"{k['reason']}", "bold"),
                " ",
                (f"[{scope}]", _SCOPE_STYLE.get(scope, "")),
                f"  {code}",
                (f"  at {k['command']}" if k["command"] else ""),
                (f"  {_span(k['first_seen'], k['last_seen'])}", "dim"),
            )
            parts: list[Any] = [head]
            extra = []
            if k["issuer"]:
                extra.append(f"issuer: {k['issuer']}")
            if k["cited_ip"]:
                extra.append(f"cites: {k['cited_ip']}")
            if k.get("mx_replies"):
                extra.append(f"{k['mx_replies']:,} from an MX before the next was tried")
            if extra:
                parts.append(
                    Padding(Text("  ".join(extra), style="dim"), (0, 0, 0, 9), expand=False)
                )
            if k["url"]:
                parts.append(
                    Padding(
                        Text(k["url"], style="blue", overflow="fold"), (0, 0, 0, 9), expand=False
                    )
                )
            parts.append(
                Padding(
                    Text(_short(k["sample"]), style="italic", overflow="fold"),
                    (0, 0, 0, 9),
                    expand=False,
                )
            )
            c.print(Group(*parts))
        if len(p["rejections"]) > MAX_KINDS:
            c.print(f"[dim]         … and {len(p['rejections']) - MAX_KINDS} more kinds[/]")


def _internal(doc: dict[str, Any], c: Console) -> None:
    items = doc["internal"]
    if not items:
        return
    c.print()
    c.rule("Postfix's own deferrals (not provider rejections)", align="left")
    for k in items[:MAX_KINDS]:
        c.print(
            Group(
                Text.assemble((f"{k['count']:>7,}  ", "bold"), k["reason"]),
                Padding(
                    Text(_short(k["sample"]), style="italic", overflow="fold"),
                    (0, 0, 0, 9),
                    expand=False,
                ),
            )
        )


def _origins(doc: dict[str, Any], c: Console) -> None:
    items = doc["origins"]
    if not items:
        return
    t = Table(title="Who sends (origins)", title_justify="left")
    t.add_column("origin", overflow="fold", max_width=26)
    t.add_column("msgs", justify="right")
    t.add_column("rcpts", justify="right")
    t.add_column("bounce", justify="right", style="red")
    t.add_column("defer", justify="right", style="yellow")
    t.add_column("top providers", overflow="ellipsis", max_width=22, no_wrap=True)
    for o in items[:MAX_ORIGINS]:
        who = f"{o['kind']} {o['id']}".strip()
        if o["name"] and o["name"] != o["id"]:
            who += f" ({o['name']})"
        top = "\n".join(f"{x['provider']} {x['recipients']}" for x in o["top_providers"][:2])
        t.add_row(
            escape(who),
            f"{o['messages']:,}",
            f"{o['recipients']:,}",
            _pct(o["bounce_ratio"]),
            _pct(o["defer_ratio"]),
            escape(top),
        )
    c.print()
    c.print(t)
    if len(items) > MAX_ORIGINS:
        c.print(f"[dim]… and {len(items) - MAX_ORIGINS} more origins (see --json)[/]")


def _inbound(doc: dict[str, Any], c: Console) -> None:
    ib = doc["inbound_rejects"]
    sasl = doc["sasl_failures"]
    if not ib["total"] and not sasl["total"]:
        return
    c.print()
    c.rule(f"Inbound: what our smtpd refused ({ib['total']:,})", align="left")
    for k in ib["kinds"][:MAX_INBOUND]:
        code = " ".join(x for x in (str(k["code"] or ""), k["enhanced"]) if x)
        top = ", ".join(x["client"] for x in k["top_clients"][:3])
        c.print(
            Group(
                Text.assemble(
                    (f"{k['count']:>7,}  ", "bold"),
                    f"{k['action']} at {k['stage']}  {code}",
                    (f"  {k['clients']} client(s): {top}", "dim"),
                ),
                Padding(
                    Text(_short(k["sample"]), style="italic", overflow="fold"),
                    (0, 0, 0, 9),
                    expand=False,
                ),
            )
        )
    if sasl["total"]:
        top = ", ".join(f"{x['client']} {x['count']}" for x in sasl["top_clients"])
        c.print(f"[bold]{sasl['total']:>7,}[/]  SASL authentication failures  [dim]{top}[/]")


def _unparsed(doc: dict[str, Any], c: Console) -> None:
    lines = doc["lines"]
    if not lines["unparsed"]:
        return
    why = ", ".join(f"{k} {v:,}" for k, v in sorted(lines["unparsed_reasons"].items()))
    c.print()
    c.print(f"[yellow]{lines['unparsed']:,} lines could not be read[/] [dim]({why})[/]")
    shown = doc.get("unparsed")
    if shown is None:
        c.print("[dim]--show-unparsed lists them[/]")
        return
    for u in shown:
        c.print(
            Text.assemble((f"{u['source']}:{u['offset']} ", "dim"), (f"[{u['why']}] ", "yellow")),
            Text(u["line"], overflow="fold"),
        )
    if len(shown) < lines["unparsed"]:
        c.print(f"[dim]… {lines['unparsed'] - len(shown):,} more not shown[/]")


def _store(doc: dict[str, Any], c: Console) -> None:
    st = doc["store"]
    c.print()
    if st is None:
        c.print("[dim]not stored (--no-store)[/]")
    elif st["already_imported"]:
        c.print(f"[dim]store: these files were imported before; nothing added ({st['url']})[/]")
    else:
        c.print(
            f"[dim]store: {st['messages']:,} new messages, {st['attempts']:,} new attempts"
            f" ({st['messages_known']:,} messages already known) in {escape(st['url'])}[/]"
        )
