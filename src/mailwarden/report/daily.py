"""The daily report: what changed in a period (24 h by default) against the period before.

:func:`build_report` reads the store and returns one JSON-able document; :func:`render_text`
and :func:`render_html` (self-contained, mailable) present it. ``mailwarden report`` prints it
and the daemon mails it every day (``[service] daily_report``).

Sections (every count for the period *and* the one before it, so a change stands out):

* ``summary``: attempts by outcome, recipients' providers, a one-line headline;
* ``providers``: per provider attempts, delivered, deferred, bounced, and rejection rate;
* ``new_rejections``: rejection kinds (provider + normalised reply) first seen in the period,
  with reason, issuer, delisting URL and a sample reply;
* ``breaker``: breaker transitions in the period;
* ``origins_new`` / ``origins_top``: who submitted mail for the first time; the busiest;
* ``spikes``: per-origin volume or provider-spread anomalies (:mod:`.spikes`);
* ``egress``: non-MTA processes that reached remote SMTP ports;
* ``blocklists``: listing changes of our IPs and domains (from the daemon's checks);
* ``sasl``: SASL authentication failures, the busiest clients;
* ``alerts``: every alert raised in the period, by kind.

With ``hosts`` the rows of those hosts only (fleet mode, see docs/service.md): mail, breaker
transitions and egress alerts alike carry the host they belong to.
"""

from __future__ import annotations

import html
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, select

from mailwarden.store import schema
from mailwarden.store.queries import provider_rejections

if TYPE_CHECKING:
    from mailwarden.config import Settings

SCHEMA = "mailwarden.daily/1"


def _fmt(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _host_filter(q: Any, col: Any, hosts: Sequence[str] | None) -> Any:
    return q.where(col.in_(list(hosts))) if hosts else q


def _on(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """``"host "`` when ``rows`` come from several hosts (a fleet report), else ``""``."""
    return f"{row.get('host', '')} " if len({r.get("host", "") for r in rows}) > 1 else ""


def _outcomes(
    conn: Connection, since: float, until: float, hosts: Sequence[str] | None
) -> dict[str, dict[str, int]]:
    """provider -> {status: attempts} in ``[since, until)``."""
    a, m = schema.attempts, schema.messages
    q = (
        select(a.c.provider, a.c.status, func.count())
        .select_from(a.join(m, a.c.message_pk == m.c.id))
        .where(a.c.ts >= since, a.c.ts < until)
        .group_by(a.c.provider, a.c.status)
    )
    q = _host_filter(q, m.c.host, hosts)
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for prov, status, n in conn.execute(q):
        out[prov][status] = int(n)
    return out


def _origins(
    conn: Connection, since: float, until: float, hosts: Sequence[str] | None
) -> dict[int, dict[str, Any]]:
    a, m, o = schema.attempts, schema.messages, schema.origins
    q = (
        select(
            o.c.id, o.c.kind, o.c.ident, o.c.name, func.count(), func.count(a.c.provider.distinct())
        )
        .select_from(a.join(m, a.c.message_pk == m.c.id).join(o, m.c.origin_id == o.c.id))
        .where(a.c.ts >= since, a.c.ts < until)
        .group_by(o.c.id, o.c.kind, o.c.ident, o.c.name)
    )
    q = _host_filter(q, m.c.host, hosts)
    return {
        int(oid): {"kind": k, "id": i, "name": nm, "attempts": int(n), "providers": int(p)}
        for oid, k, i, nm, n, p in conn.execute(q)
    }


def _first_arrivals(
    conn: Connection, oids: list[int], hosts: Sequence[str] | None
) -> dict[int, float]:
    m = schema.messages
    out: dict[int, float] = {}
    for i in range(0, len(oids), 500):
        q = (
            select(m.c.origin_id, func.min(m.c.arrival))
            .where(m.c.origin_id.in_(oids[i : i + 500]))
            .group_by(m.c.origin_id)
        )
        q = _host_filter(q, m.c.host, hosts)
        out.update({int(k): float(v) for k, v in conn.execute(q)})
    return out


def build_report(
    bind: Engine | Connection,
    *,
    since: float,
    until: float,
    hosts: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The report document for ``[since, until)`` (see module doc)."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return build_report(conn, since=since, until=until, hosts=hosts, settings=settings)
    from mailwarden.config import Settings as _Settings

    st = settings or _Settings()
    conn = bind
    hosts = sorted(set(hosts)) if hosts else None
    span = until - since
    prev_since = since - span
    public = st.service.public_url.rstrip("/")

    cur, prev = _outcomes(conn, since, until, hosts), _outcomes(conn, prev_since, since, hosts)
    providers = []
    totals = {"attempts": 0, "sent": 0, "deferred": 0, "bounced": 0}
    ptotals = {"attempts": 0, "sent": 0, "deferred": 0, "bounced": 0}
    for prov in sorted(set(cur) | set(prev)):
        c, p = cur.get(prov, {}), prev.get(prov, {})
        row: dict[str, Any] = {
            "provider": prov,
            "attempts": sum(c.values()),
            "sent": c.get("sent", 0),
            "deferred": c.get("deferred", 0),
            "bounced": c.get("bounced", 0) + c.get("expired", 0),
            "prev_attempts": sum(p.values()),
            "prev_sent": p.get("sent", 0),
            "prev_deferred": p.get("deferred", 0),
            "prev_bounced": p.get("bounced", 0) + p.get("expired", 0),
        }
        att = row["attempts"] or 1
        row["rejected_share"] = round((row["deferred"] + row["bounced"]) / att, 4)
        patt = row["prev_attempts"] or 1
        row["prev_rejected_share"] = round((row["prev_deferred"] + row["prev_bounced"]) / patt, 4)
        providers.append(row)
        for name in totals:
            totals[name] += int(row[name])
            ptotals[name] += int(row[f"prev_{name}"])
    providers.sort(key=lambda r: (-(r["deferred"] + r["bounced"]), -r["attempts"], r["provider"]))

    # rejection kinds: counted in both periods; "new" = first seen in this one
    rc = {k.id: k for k in provider_rejections(conn, since=since, until=until, hosts=hosts)}
    rp = {k.id: k for k in provider_rejections(conn, since=prev_since, until=since, hosts=hosts)}
    kinds: list[dict[str, Any]] = []
    for kid in sorted(rc.keys() | rp.keys()):
        k = rc.get(kid) or rp[kid]
        kinds.append(
            {
                "provider": k.provider,
                "reason": k.reason,
                "scope": k.scope,
                "code": k.code,
                "enhanced": k.enhanced,
                "issuer": k.issuer,
                "url": k.url,
                "sample": k.sample,
                "first_seen": k.kind_first_seen,
                "count": rc[kid].count if kid in rc else 0,
                "prev_count": rp[kid].count if kid in rp else 0,
                "new": since <= k.kind_first_seen < until,
            }
        )
    kinds.sort(key=lambda k: (-k["count"], k["provider"], k["reason"]))
    reasons: dict[str, dict[str, int]] = defaultdict(lambda: {"count": 0, "prev_count": 0})
    for kd in kinds:
        key = f"{kd['provider']}/{kd['reason']}"
        reasons[key]["count"] += kd["count"]
        reasons[key]["prev_count"] += kd["prev_count"]

    # breaker transitions (each host's breakers act on its own Postfix)
    from mailwarden.store.breaker import TRANSITION_FIELDS
    from mailwarden.store.breaker import breaker_transitions as bt

    keys = ("host", *(f for f in TRANSITION_FIELDS if f != "level"))  # as stored, but the level
    q = _host_filter(select(bt).where(bt.c.ts >= since, bt.c.ts < until), bt.c.host, hosts)
    breaker = [
        {k: row[k] for k in keys}
        for row in conn.execute(q.order_by(bt.c.ts, bt.c.id).limit(500)).mappings()
    ]

    # origins
    oc, op = _origins(conn, since, until, hosts), _origins(conn, prev_since, since, hosts)
    firsts = _first_arrivals(conn, sorted(oc), hosts)
    origins_top: list[dict[str, Any]] = []
    origins_new: list[dict[str, Any]] = []
    for oid, o in sorted(oc.items(), key=lambda kv: -kv[1]["attempts"]):
        orow = dict(o, prev_attempts=op.get(oid, {}).get("attempts", 0), first_seen=firsts.get(oid))
        if len(origins_top) < 15:
            origins_top.append(orow)
        if firsts.get(oid) is not None and firsts[oid] >= since:
            origins_new.append(orow)

    # spikes (judged at the end of the period)
    from mailwarden.report.spikes import detect_spikes

    spikes, no_history = detect_spikes(conn, st.alerts, hosts=hosts, now=until)

    # egress alerts (the recorder's table, tagged with the recording host)
    import json as _json

    from mailwarden.store.egress import egress_alerts as ea

    q2 = _host_filter(
        select(ea).where(ea.c.raised_at >= since, ea.c.raised_at < until), ea.c.host, hosts
    )
    egress: list[dict[str, Any]] = []
    for erow in conn.execute(q2.order_by(ea.c.raised_at, ea.c.id).limit(200)).mappings():
        try:
            ev = _json.loads(erow["evidence"])
        except ValueError:
            ev = {}
        egress.append(
            {
                "host": erow["host"],
                "raised_at": erow["raised_at"],
                "uid": erow["uid"],
                "user": erow["user"],
                "exe": erow["exe"],
                "unit": erow["unit"],
                "script": erow["script"],
                "port": erow["port"],
                "count": erow["count"],
                "blocked": erow["blocked"],
                "destinations": ev.get("destinations", [])[:10],
            }
        )

    # blocklist changes and current listings (kept by the daemon per host)
    from mailwarden.store.service import alerts as at
    from mailwarden.store.service import sasl_failures, service_state

    blocklists: list[dict[str, Any]] = []
    listed_now: set[str] = set()
    sq = select(service_state.c.host, service_state.c.name, service_state.c.value).where(
        service_state.c.name.in_(["dnsbl", "dnsbl_changes"])
    )
    for h, name, value in conn.execute(sq):
        if hosts and h not in hosts:
            continue
        try:
            v = _json.loads(value)
        except ValueError:
            continue
        if name == "dnsbl" and isinstance(v, dict):
            listed_now.update(v)
        elif name == "dnsbl_changes" and isinstance(v, list):
            blocklists += [c for c in v if isinstance(c, dict) and since <= c.get("ts", 0) < until]
    blocklists.sort(key=lambda c: c.get("ts", 0))

    # SASL failures
    s = sasl_failures
    client = func.coalesce(func.nullif(s.c.client_ip, ""), s.c.client_name)

    def sasl_count(a0: float, a1: float) -> int:
        q = select(func.count()).where(s.c.ts >= a0, s.c.ts < a1)
        return int(conn.execute(_host_filter(q, s.c.host, hosts)).scalar() or 0)

    q3 = (
        select(client, func.count())
        .where(s.c.ts >= since, s.c.ts < until)
        .group_by(client)
        .order_by(func.count().desc())
        .limit(10)
    )
    sasl = {
        "failures": sasl_count(since, until),
        "prev_failures": sasl_count(prev_since, since),
        "top_clients": [
            {"client": c, "count": int(n)}
            for c, n in conn.execute(_host_filter(q3, s.c.host, hosts))
        ],
    }

    # alerts raised
    q4 = (
        select(at.c.kind, at.c.severity, func.count())
        .where(at.c.ts >= since, at.c.ts < until, at.c.kind != "report")
        .group_by(at.c.kind, at.c.severity)
    )
    alerts_by: dict[str, dict[str, int]] = defaultdict(dict)
    for kind, sev, n in conn.execute(_host_filter(q4, at.c.host, hosts)):
        alerts_by[kind][sev] = int(n)

    new_kinds = [k for k in kinds if k["new"]]
    rejected = totals["deferred"] + totals["bounced"]
    headline_parts = [f"{totals['attempts']} attempts", f"{totals['sent']} delivered"]
    if rejected:
        headline_parts.append(f"{rejected} refused or deferred")
    if new_kinds:
        headline_parts.append(f"{len(new_kinds)} new rejection kinds")
    opened = [b for b in breaker if b["new"] == "open"]
    if opened:
        headline_parts.append(f"{len(opened)} breaker trips")
    if spikes:
        headline_parts.append(f"{len(spikes)} spikes")
    if blocklists:
        headline_parts.append(f"{len(blocklists)} blocklist changes")
    if egress:
        headline_parts.append(f"{len(egress)} egress alerts")
    links = {}
    if public:
        links = {
            "dashboard": public + "/",
            "breaker": public + "/breaker",
            "egress": public + "/egress",
        }
    return {
        "schema": SCHEMA,
        "generated": time.time(),
        "since": since,
        "until": until,
        "prev_since": prev_since,
        "hosts": list(hosts) if hosts else [],
        "summary": {
            "headline": ", ".join(headline_parts),
            **totals,
            "prev": ptotals,
        },
        "providers": providers,
        "new_rejections": new_kinds,
        "rejections": kinds[:50],
        "reasons": [
            {"key": k, **v} for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]["count"])
        ][:30],
        "breaker": breaker,
        "origins_new": origins_new[:50],
        "origins_top": origins_top,
        "spikes": [sp.as_dict() for sp in spikes],
        "spikes_not_judged": no_history,
        "egress": egress,
        "blocklists": blocklists,
        "listed_now": sorted(listed_now),
        "sasl": sasl,
        "alerts": {k: v for k, v in sorted(alerts_by.items())},
        "links": links,
    }


def _delta(cur: int, prev: int) -> str:
    d = cur - prev
    return f"{cur} ({'+' if d >= 0 else ''}{d})"


def _origin_name(o: dict[str, Any]) -> str:
    if o["kind"] == "uid":
        return f"uid {o['id']}" + (f" ({o['name']})" if o["name"] else "")
    return f"{o['kind']} {o['id'] or '-'}" + (f" ({o['name']})" if o.get("name") else "")


def render_text(doc: dict[str, Any]) -> str:
    """Plain text for the terminal and the text part of the mail."""
    s = doc["summary"]
    p = s["prev"]
    out = [
        f"mailwarden daily report {_fmt(doc['since'])} - {_fmt(doc['until'])}"
        + (f" (hosts: {', '.join(doc['hosts'])})" if doc["hosts"] else " (all hosts)"),
        "",
        s["headline"],
        "",
        "Compared with the period before (change in brackets):",
        f"  attempts {_delta(s['attempts'], p['attempts'])}, delivered "
        f"{_delta(s['sent'], p['sent'])}, deferred {_delta(s['deferred'], p['deferred'])}, "
        f"bounced {_delta(s['bounced'], p['bounced'])}",
    ]
    if doc["providers"]:
        out += ["", "Providers (most refusals first):"]
        for r in doc["providers"][:20]:
            out.append(
                f"  {r['provider']:<20} attempts {_delta(r['attempts'], r['prev_attempts']):<14} "
                f"delivered {r['sent']:<6} deferred {r['deferred']:<6} bounced {r['bounced']}"
            )
    if doc["new_rejections"]:
        out += ["", "New rejections (first seen in this period):"]
        for k in doc["new_rejections"][:20]:
            out.append(
                f"  {k['provider']}: {k['reason']} x{k['count']}"
                + (f" [{k['issuer']}]" if k["issuer"] else "")
                + f"  {k['sample'][:160]}"
                + (f"  {k['url']}" if k["url"] else "")
            )
    if doc["breaker"]:
        out += ["", "Breaker:"]
        for b in doc["breaker"]:
            out.append(
                f"  {_fmt(b['ts'])} {_on(b, doc['breaker'])}"
                f"{b['provider']}{' ' + b['ip'] if b['ip'] else ''}: "
                f"{b['old']} -> {b['new']} ({b['actor']}{' ' + b['rule'] if b['rule'] else ''})"
            )
    if doc["spikes"]:
        out += ["", "Spikes:"]
        for sp in doc["spikes"]:
            o = sp["origin"]
            out.append(
                f"  {sp['host']} {o['kind']} {o['id']}: {sp['current']} {sp['metric']} in 24 h "
                f"(usual {sp['median']:g}, threshold {sp['threshold']:.0f})"
            )
    if doc["origins_new"]:
        out += ["", "New origins:"]
        out += [f"  {_origin_name(o)}: {o['attempts']} attempts" for o in doc["origins_new"][:20]]
    if doc["egress"]:
        out += ["", "Egress (non-MTA processes reaching SMTP ports):"]
        for e in doc["egress"]:
            out.append(
                f"  {_fmt(e['raised_at'])} {_on(e, doc['egress'])}{e['user'] or e['uid']} "
                f"{e['script'] or e['exe'] or e['unit']} port {e['port']}: {e['count']} "
                f"({e['blocked']} blocked) -> {', '.join(e['destinations'][:5])}"
            )
    if doc["blocklists"]:
        out += ["", "Blocklists:"]
        for c in doc["blocklists"]:
            out.append(
                f"  {_fmt(c['ts'])} {c['subject']} "
                + ("LISTED on" if c["listed"] else "delisted from")
                + f" {c['zone_name']}"
                + (f"  {c['url']}" if c.get("url") else "")
            )
    sa = doc["sasl"]
    if sa["failures"] or sa["prev_failures"]:
        out += [
            "",
            f"SASL authentication failures: {_delta(sa['failures'], sa['prev_failures'])}",
        ]
        out += [f"  {c['client']}: {c['count']}" for c in sa["top_clients"]]
    if doc["alerts"]:
        out += ["", "Alerts raised:"]
        for kind, by in doc["alerts"].items():
            out.append(f"  {kind}: " + ", ".join(f"{n} {sev}" for sev, n in sorted(by.items())))
    if doc["spikes_not_judged"]:
        out += [
            "",
            "Not judged for spikes (less than 3 days of history): "
            + ", ".join(doc["spikes_not_judged"]),
        ]
    if doc["links"]:
        out += ["", *(f"{k}: {v}" for k, v in doc["links"].items())]
    return "\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;color:#222;max-width:60em}"
    "table{border-collapse:collapse;margin:.5em 0 1.2em}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:.9em}"
    "th{background:#f2f2f2}.num{text-align:right}.up{color:#b00}.down{color:#070}"
    "h2{font-size:1.1em;margin-top:1.4em}code{font-size:.85em}"
)


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(c)}</td>' if isinstance(c, (int, float)) else f"<td>{c}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _link(url: str, label: str = "") -> str:
    if not url.startswith(("http://", "https://")):
        return _e(label or url)
    return f'<a href="{_e(url)}">{_e(label or url)}</a>'


def _dhtml(cur: int, prev: int) -> str:
    d = cur - prev
    cls = "up" if d > 0 else "down" if d < 0 else ""
    return f'{cur} <span class="{cls}">({"+" if d >= 0 else ""}{d})</span>'


def render_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS, no scripts, every value escaped)."""
    s = doc["summary"]
    p = s["prev"]
    title = f"mailwarden daily report {_fmt(doc['since'])} - {_fmt(doc['until'])}"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{_e('hosts: ' + ', '.join(doc['hosts']) if doc['hosts'] else 'all hosts')}</p>",
        f"<p><strong>{_e(s['headline'])}</strong></p>",
        _table(
            ["", "attempts", "delivered", "deferred", "bounced"],
            [
                [
                    "this period",
                    _dhtml(s["attempts"], p["attempts"]),
                    _dhtml(s["sent"], p["sent"]),
                    _dhtml(s["deferred"], p["deferred"]),
                    _dhtml(s["bounced"], p["bounced"]),
                ],
                ["period before", p["attempts"], p["sent"], p["deferred"], p["bounced"]],
            ],
        ),
    ]
    if doc["providers"]:
        parts.append("<h2>Providers</h2>")
        parts.append(
            _table(
                ["provider", "attempts", "delivered", "deferred", "bounced", "refused share"],
                [
                    [
                        _e(r["provider"]),
                        _dhtml(r["attempts"], r["prev_attempts"]),
                        r["sent"],
                        r["deferred"],
                        r["bounced"],
                        f"{r['rejected_share'] * 100:.1f}%",
                    ]
                    for r in doc["providers"][:30]
                ],
            )
        )
    if doc["new_rejections"]:
        parts.append("<h2>New rejections</h2>")
        parts.append(
            _table(
                ["provider", "reason", "count", "issuer", "reply", "more"],
                [
                    [
                        _e(k["provider"]),
                        _e(k["reason"]),
                        k["count"],
                        _e(k["issuer"]),
                        f"<code>{_e(k['sample'][:300])}</code>",
                        _link(k["url"], "lookup") if k["url"] else "",
                    ]
                    for k in doc["new_rejections"][:30]
                ],
            )
        )
    if doc["breaker"]:
        parts.append("<h2>Breaker</h2>")
        parts.append(
            _table(
                ["time", "provider", "change", "by", "reply"],
                [
                    [
                        _e(_fmt(b["ts"])),
                        _e(
                            _on(b, doc["breaker"])
                            + b["provider"]
                            + (" " + b["ip"] if b["ip"] else "")
                        ),
                        _e(f"{b['old']} -> {b['new']}"),
                        _e(b["actor"] + (" " + b["rule"] if b["rule"] else "")),
                        f"<code>{_e(b['reply'][:200])}</code>",
                    ]
                    for b in doc["breaker"]
                ],
            )
        )
    if doc["spikes"]:
        parts.append("<h2>Spikes</h2>")
        parts.append(
            _table(
                ["host", "origin", "metric", "last 24 h", "usual", "threshold"],
                [
                    [
                        _e(sp["host"]),
                        _e(_origin_name(sp["origin"])),
                        _e(sp["metric"]),
                        sp["current"],
                        sp["median"],
                        round(sp["threshold"]),
                    ]
                    for sp in doc["spikes"]
                ],
            )
        )
    if doc["origins_new"]:
        parts.append("<h2>New origins</h2>")
        parts.append(
            _table(
                ["origin", "attempts", "providers"],
                [[_e(_origin_name(o)), o["attempts"], o["providers"]] for o in doc["origins_new"]],
            )
        )
    if doc["origins_top"]:
        parts.append("<h2>Busiest origins</h2>")
        parts.append(
            _table(
                ["origin", "attempts", "providers"],
                [
                    [_e(_origin_name(o)), _dhtml(o["attempts"], o["prev_attempts"]), o["providers"]]
                    for o in doc["origins_top"]
                ],
            )
        )
    if doc["egress"]:
        parts.append("<h2>Egress</h2>")
        parts.append(
            _table(
                ["time", "user", "program", "port", "attempts", "blocked", "destinations"],
                [
                    [
                        _e(_fmt(e["raised_at"])),
                        _e(_on(e, doc["egress"]) + str(e["user"] or e["uid"])),
                        _e(e["script"] or e["exe"] or e["unit"]),
                        e["port"],
                        e["count"],
                        e["blocked"],
                        _e(", ".join(e["destinations"][:5])),
                    ]
                    for e in doc["egress"]
                ],
            )
        )
    if doc["blocklists"]:
        parts.append("<h2>Blocklists</h2>")
        parts.append(
            _table(
                ["time", "subject", "change", "list", "more"],
                [
                    [
                        _e(_fmt(c["ts"])),
                        _e(c["subject"]),
                        "listed" if c["listed"] else "delisted",
                        _e(c["zone_name"]),
                        _link(c.get("url", ""), "lookup") if c.get("url") else "",
                    ]
                    for c in doc["blocklists"]
                ],
            )
        )
    sa = doc["sasl"]
    if sa["failures"] or sa["prev_failures"]:
        parts.append("<h2>SASL authentication failures</h2>")
        parts.append(f"<p>{_dhtml(sa['failures'], sa['prev_failures'])}</p>")
        if sa["top_clients"]:
            parts.append(
                _table(
                    ["client", "failures"],
                    [[_e(c["client"]), c["count"]] for c in sa["top_clients"]],
                )
            )
    if doc["alerts"]:
        parts.append("<h2>Alerts raised</h2>")
        parts.append(
            _table(
                ["kind", "severity", "count"],
                [
                    [_e(k), _e(sev), n]
                    for k, by in doc["alerts"].items()
                    for sev, n in sorted(by.items())
                ],
            )
        )
    if doc["links"]:
        parts.append("<p>" + " · ".join(_link(u, k) for k, u in doc["links"].items()) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
