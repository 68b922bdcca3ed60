"""``mailwarden explain "554 5.7.1 ..." [--host MX] [--json]``: what a reply means.

Shows the reason, scope, provider, blocklist issuer, lookup/delisting URL, the IP the receiver
cites and the table rule that decided. The reply may be a bare SMTP reply, a DSN
Diagnostic-Code or a whole Postfix reason (``host mx[ip] said: ... (in reply to RCPT TO
command)``, ``delivery temporarily suspended: ...``). ``--check`` instead runs every sample of the
loaded tables (shipped and /etc/mailwarden) through the classifier: use it after editing a local
table. Exit codes: 0 ok, 1 ``--check`` found failing samples, 2 error (bad table).
"""

from __future__ import annotations

from typing import Any

import typer

from mailwarden.cli import app
from mailwarden.errors import EXIT_OK, EXIT_WARNING


@app.command()
def explain(
    reply: str = typer.Argument("", metavar="REPLY", help="The reply or Postfix reason text."),
    host: str = typer.Option("", "--host", help="Relay (MX) host that answered."),
    command: str = typer.Option("", "--command", help='SMTP stage, e.g. "RCPT TO".'),
    dsn: str = typer.Option("", "--dsn", help="Enhanced status logged beside it (dsn=)."),
    recipient: str = typer.Option(
        "", "--recipient", help="Recipient address: names the provider when no host is known."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    check: bool = typer.Option(False, "--check", help="Run every table sample instead."),
) -> None:
    """Explain an SMTP reply: reason, scope, provider, issuer, URL, cited IP and rule."""
    import json

    from mailwarden.classify import Classifier

    c = Classifier.load()
    if check:
        raise typer.Exit(_check(c, as_json))
    if not reply.strip():
        raise typer.BadParameter("give a reply text (or --check)", param_hint="REPLY")
    doc = explain_reply(c, reply, host=host, command=command, dsn=dsn, recipient=recipient)
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        _print(doc)
    raise typer.Exit(EXIT_OK)


def explain_reply(
    c: Any, text: str, *, host: str = "", command: str = "", dsn: str = "", recipient: str = ""
) -> dict[str, Any]:
    """Classify ``text`` the way the log pipeline would and return a JSON-able dict."""
    from dataclasses import asdict, replace

    from mailwarden.sources.reply import parse_reply

    r = parse_reply(text)
    if command:
        r = replace(r, command=command)
    if host:
        r = replace(r, host=host)
    # relay=none lines: the host quoted in the reason, else the recipient's domain
    provider = c.provider_for_host(r.host) if r.host else ""
    provider = provider or (c.provider_for_domain(recipient) if recipient else "")
    cl = c.classify(r, dsn=dsn, text=text, provider=provider)
    prov = c.providers.get(cl.provider)
    doc: dict[str, Any] = asdict(cl)
    doc.update(
        {
            "known_provider": prov is not None,
            "provider_display": prov.display if prov else "",
            "postmaster_url": prov.postmaster_url if prov else "",
            "delisting_url": prov.delisting_url if prov else "",
            "code": r.code,
            "enhanced": r.enhanced or dsn,
            "command": r.command,
            "host": r.host,
            "remote": r.remote,
            "text": r.text,
        }
    )
    return doc


_SCOPE_WORDS = {
    "ours": "our IP, domain, content or configuration",
    "recipient": "the recipient address or domain",
    "transient": "the receiver or the network; try again later",
}


def _print(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    t.add_row("reason", doc["reason"])
    scope = doc["scope"]
    t.add_row("scope", f"{scope} ({_SCOPE_WORDS.get(scope, '')})" if scope else "")
    prov = doc["provider"] or "(unknown)"
    if doc["provider_display"]:
        prov += f" - {doc['provider_display']}"
    elif doc["provider"]:
        prov += " (organisational domain, no provider table)"
    t.add_row("provider", prov)
    t.add_row("issuer", doc["issuer"] or "-")
    t.add_row("url", doc["url"] or "-")
    if doc["delisting_url"] and doc["delisting_url"] != doc["url"] and scope == "ours":
        t.add_row("delisting", doc["delisting_url"])
    t.add_row("cited ip", doc["cited_ip"] or "-")
    t.add_row("rule", doc["rule"])
    if doc["internal"]:
        t.add_row("internal", "yes: Postfix's or mailwarden's own deferral, not a rejection")
    code = " ".join(str(x) for x in (doc["code"], doc["enhanced"]) if x)
    t.add_row("parsed", f"{code or '(no code)'} at {doc['command'] or '?'}: {doc['text']}")
    Console().print(t)


def _check(c: Any, as_json: bool) -> int:
    import json

    from mailwarden.classify.samples import check, owned_patterns

    failures: list[dict[str, Any]] = []
    total = 0
    bare: list[str] = []
    for owner in owned_patterns(c):
        if not owner.samples:
            bare.append(owner.id)
        for s in owner.samples:
            total += 1
            diff = check(c, owner, s)
            if diff:
                failures.append({"rule": owner.id, "reply": s.reply, "diff": diff})
    if as_json:
        typer.echo(json.dumps({"samples": total, "failures": failures, "without_samples": bare}))
    else:
        for f in failures:
            typer.echo(f"FAIL {f['rule']}: {f['reply']!r}")
            for k, (want, got) in f["diff"].items():
                typer.echo(f"     {k}: expected {want!r}, got {got!r}")
        for b in bare:
            typer.echo(f"NO SAMPLE {b}")
        typer.echo(
            f"{total - len(failures)}/{total} samples ok, {len(bare)} patterns without samples"
        )
    return EXIT_WARNING if failures or bare else EXIT_OK
