"""``mailwarden firewall plan|apply|check|remove``: the egress rule.

See :mod:`mailwarden.egress.firewall` for what the rule does.

Exit codes: 0 ok; 1 ``check`` found the rule missing or drifted; 2 error.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from mailwarden.cli import app

if TYPE_CHECKING:
    from mailwarden.egress.firewall import Firewall

fw = typer.Typer(
    help="The egress firewall rule: only the MTA's users reach remote SMTP ports.",
    no_args_is_help=True,
)
app.add_typer(fw, name="firewall")

Backend = Annotated[str | None, typer.Option("--backend", help="nft or iptables")]
Mode = Annotated[str | None, typer.Option("--mode", help="enforce (reject) or monitor (log only)")]
Users = Annotated[list[str] | None, typer.Option("--allow-user", help="allowed user (repeatable)")]
Ports = Annotated[list[int] | None, typer.Option("--port", help="watched port (repeatable)")]
Netns = Annotated[str | None, typer.Option("--netns", help="act inside this network namespace")]


def _firewall(
    backend: str | None,
    mode: str | None,
    users: list[str] | None,
    ports: list[int] | None,
    netns: str | None,
) -> Firewall:
    from mailwarden.config import load_settings
    from mailwarden.egress.firewall import Firewall, Policy

    s = load_settings().egress
    policy = Policy.make(
        ports=list(ports or s.ports),
        users=list(users or s.allowed_users),
        mode=mode or s.firewall_mode,
        table=s.firewall_table,
        allow_group=s.nflog_allow_group,
        block_group=s.nflog_block_group,
    )
    return Firewall(policy, backend or s.firewall_backend, netns=netns)


@fw.command()
def plan(
    backend: Backend = None, mode: Mode = None, allow_user: Users = None, port: Ports = None
) -> None:
    """Print the exact ruleset that `apply` would load."""
    typer.echo(_firewall(backend, mode, allow_user, port, None).plan(), nl=False)


@fw.command()
def apply(
    backend: Backend = None,
    mode: Mode = None,
    allow_user: Users = None,
    port: Ports = None,
    netns: Netns = None,
) -> None:
    """Load (or replace) the rule atomically. Touches nothing but mailwarden's own table/chain."""
    f = _firewall(backend, mode, allow_user, port, netns)
    f.apply()
    typer.echo(
        f"firewall: {f.backend} rule applied ({f.policy.mode}; allowed uids "
        f"{', '.join(map(str, f.policy.uids))}; ports {', '.join(map(str, f.policy.ports))})"
    )


@fw.command()
def check(
    backend: Backend = None,
    mode: Mode = None,
    allow_user: Users = None,
    port: Ports = None,
    netns: Netns = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Compare the live rule with the plan; show drift and counters. Exit 1 if not as planned."""
    f = _firewall(backend, mode, allow_user, port, netns)
    r = f.check()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "installed": r.installed,
                    "ok": r.ok,
                    "drift": r.drift,
                    "counters": r.counters,
                    "backend": f.backend,
                    "mode": f.policy.mode,
                }
            )
        )
    else:
        if not r.installed:
            typer.echo(f"firewall: {f.backend} rule not installed")
        elif r.drift:
            typer.echo(f"firewall: {f.backend} rule differs from the plan:")
            for line in r.drift:
                typer.echo("  " + line)
        else:
            typer.echo(f"firewall: {f.backend} rule in place ({f.policy.mode})")
        for name, c in sorted(r.counters.items()):
            typer.echo(f"  {name:8} {c['packets']:>10} packets {c['bytes']:>12} bytes")
    raise typer.Exit(0 if r.ok else 1)


@fw.command()
def remove(backend: Backend = None, netns: Netns = None) -> None:
    """Delete mailwarden's table (nft) or chain and jump rules (iptables)."""
    f = _firewall(backend, None, None, None, netns)
    gone = f.remove()
    typer.echo("firewall: removed" if gone else "firewall: nothing to remove")
