"""``trace`` verdicts: what each Received hop says, where our servers end, and whether a hop
from one of our IPs was our MTA or another program on the same IP.

Input: parsed hops (top = newest first, as in the message), our :class:`~mailwarden.identity.
Identity`, and optional look-ups into the mailwarden store (messages by Message-ID, egress
connections by source IP). Everything here is offline and pure; DNS checks (``--live``) live in
:mod:`mailwarden.forensics.live` and are merged in by the caller.

Reading rules:

* a hop is written by its receiver (``by``); only hops written by servers one trusts are
  evidence, everything below the *trust boundary* is a claim;
* inbound (the top hop was written by us): walk down while our servers received from our own
  or internal addresses; the first hop whose sender is outside is the boundary;
* outbound / abuse report (someone else wrote the top hops): the highest hop whose connecting
  address is ours is the hand-over from us to them; below it is what our side wrote (our MTA)
  or what a program on our IP made up;
* our MTA says our HELO name and adds its own Received line with a queue id when it accepts a
  message (smtpd or pickup); the store knows every Message-ID it logged. A hand-over hop with
  a foreign HELO, no hop by our MTA below it and no Message-ID in our logs was sent directly
  by another program on our IP.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, Protocol

from mailwarden.forensics.received import Hop, host_name, parse_ip
from mailwarden.identity import Identity

Severity = Literal["info", "warning", "error"]

#: Clock skew tolerated between two hops before "time goes backwards" is reported (seconds).
SKEW = 300.0
#: How far around a hop's date the store and the egress records are searched (seconds).
WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One plain-language observation about a hop (``code`` is stable, ``text`` is for people)."""

    code: str
    severity: Severity
    text: str


@dataclass(slots=True)
class HopReport:
    index: int  # 1 = top (newest) header
    hop: Hop
    findings: list[Finding] = field(default_factory=list)
    ours_by: bool = False  # written by one of our servers
    ours_from: bool = False  # connecting address is one of ours
    live: dict[str, Any] = field(default_factory=dict)  # filled by --live

    def add(self, code: str, severity: Severity, text: str) -> None:
        self.findings.append(Finding(code, severity, text))


@dataclass(slots=True)
class Verdict:
    """The conclusion. ``kind``: postfix | direct | inbound | not-ours | unknown."""

    kind: str
    summary: str
    confidence: Literal["high", "medium", "low"] = "low"
    boundary: int | None = None  # index of the hop at the trust boundary
    queue_id: str = ""
    evidence: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TraceReport:
    hops: list[HopReport]
    verdict: Verdict
    message_id: str = ""
    notes: list[str] = field(default_factory=list)


class MessageLookup(Protocol):
    """Messages our MTA logged: ``(message_id, around, window) -> [StoredMessage-like]``.

    Each result needs ``qid``, ``host``, ``arrival`` (and may have ``attempts``).
    """

    def __call__(
        self, *, message_id: str, around: float | None, window: float
    ) -> Sequence[Any]: ...


class EgressLookup(Protocol):
    """Outbound SMTP connections seen on this host: ``(saddr, around, window) -> [records]``.

    Each record needs ``ts``, ``daddr``, ``dport``, ``comm``, ``pid``, ``user``, ``exe`` and
    ``mta`` (True when the process was our MTA). Supplied by the egress collectors' store.
    """

    def __call__(self, *, saddr: str, around: float, window: float) -> Sequence[Any]: ...


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _psl() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=4096)
def org_domain(name: str) -> str:
    """Registered domain of a host name (``mx1.mail.example.co.uk`` -> ``example.co.uk``)."""
    n = name.strip().rstrip(".").lower()
    if not n or parse_ip(n)[0]:
        return ""
    try:
        dom = _psl().privatesuffix(n)
    except Exception:  # the list raises on odd labels; treat as "no registered domain"
        dom = None
    return str(dom) if dom else n


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


_INTERNAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


@lru_cache(maxsize=16384)
def ip_kind(ip: str) -> str:
    """ "loopback", "link-local", "private" (RFC 1918, CGNAT, ULA) or "" for anything else."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if a.is_loopback:
        return "loopback"
    if a.is_link_local:
        return "link-local"
    if a.is_unspecified or any(a in n for n in _INTERNAL_NETS if n.version == a.version):
        return "private"
    return ""


def _when(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur(seconds: float) -> str:
    s = abs(int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _peer(h: Hop) -> str:
    parts = [f"HELO {h.helo}" if h.helo else "no HELO"]
    parts.append(f"rDNS {h.rdns}" if h.rdns else "no rDNS")
    return f"{h.ip} ({', '.join(parts)})"


def _names_of(h: Hop) -> set[str]:
    return {n for n in (_norm(h.helo.strip("[]")), _norm(h.rdns), h.ip) if n}


# --------------------------------------------------------------------------------------------
# per-hop findings
# --------------------------------------------------------------------------------------------


def _hop_findings(r: HopReport, me: Identity) -> None:
    h = r.hop
    if not h.parsed:
        r.add("not-relay", "info", f"not a relay hop: {h.why}")
        return
    kind = ip_kind(h.ip)
    if kind:
        r.add("internal-ip", "info", f"{h.ip} is a {kind} address (an internal hop)")
    if "content-filter" in h.flags:
        r.add("content-filter", "info", "hand-over to or from a content filter on the same host")
    if "webmail" in h.flags:
        r.add("webmail", "info", f"webmail submission over {h.protocol or 'HTTP'} from {h.ip}")
    if h.auth:
        r.add("authenticated", "info", f"authenticated submission ({h.auth})")

    # reverse DNS as the receiver recorded it
    if h.rdns_status == "not recorded" and not kind:
        if h.mta == "Microsoft Exchange":
            r.add(
                "no-rdns",
                "info",
                f"no reverse DNS recorded for {h.ip} (Exchange never records it)",
            )
        else:
            named = (
                f"; '{h.helo}' is the HELO name the client gave, not a DNS result" if h.helo else ""
            )
            r.add(
                "no-rdns",
                "warning",
                f"no reverse DNS recorded: the receiver wrote only the address {h.ip}{named}",
            )
    elif h.rdns_status == "unknown" and not kind:
        r.add("no-rdns", "warning", f"the receiver found no reverse DNS name for {h.ip}")
    elif h.rdns_status == "failed":
        r.add("rdns-failed", "warning", f"the receiver's reverse DNS lookup for {h.ip} failed")
    if "may-be-forged" in h.flags:
        r.add(
            "rdns-not-confirmed",
            "warning",
            f"the receiver flagged rDNS {h.rdns} as not forward-confirmed ('may be forged')",
        )

    # HELO
    helo = h.helo
    if not helo:
        if "webmail" not in h.flags and h.protocol not in ("", "HTTP", "HTTPS"):
            r.add("no-helo", "info", "no HELO name recorded")
        return
    literal, _, _, bracketed = parse_ip(helo)
    if literal and bracketed:
        if literal == h.ip:
            r.add("helo-literal", "info", f"HELO is the client's own address literal {helo}")
        elif ip_kind(literal):
            r.add(
                "helo-literal",
                "info",
                f"HELO {helo} is a {ip_kind(literal)} address: a client behind NAT",
            )
        else:
            r.add(
                "helo-literal",
                "warning",
                f"HELO address literal {helo} is not the connecting address {h.ip}",
            )
        return
    if literal:
        r.add(
            "helo-bare-ip",
            "warning",
            f"HELO is a bare IP address ({helo}), neither a host name nor an [address literal]",
        )
        return
    hname = host_name(helo)
    if not hname:
        r.add(
            "helo-not-fqdn",
            "warning",
            f"HELO '{helo}' is not a fully-qualified host name (typical of a desktop client "
            "or a script)",
        )
        return
    if me.is_our_name(hname) and not me.is_our_ip(h.ip) and not kind:
        r.add(
            "helo-ours-foreign-ip",
            "warning",
            f"HELO claims our own name {hname} from {h.ip}, which is not one of our addresses",
        )
    horg = org_domain(hname)
    bare_domain = horg == _norm(hname) and "." in horg
    if h.rdns:
        if _norm(h.rdns) == _norm(hname):
            return
        rorg = org_domain(h.rdns)
        if rorg and rorg == horg:
            r.add(
                "helo-rdns-mismatch",
                "info",
                f"HELO {hname} differs from rDNS {h.rdns} (same domain {horg})",
            )
        else:
            r.add(
                "helo-rdns-mismatch",
                "warning",
                f"HELO {hname} does not match rDNS {h.rdns}: the client named a host in "
                f"{horg or hname}, its address belongs to {rorg or h.rdns}",
            )
            if bare_domain:
                r.add(
                    "helo-foreign-domain",
                    "warning",
                    f"HELO is the bare domain {hname} while {h.ip} resolves into {rorg}: "
                    "the client used someone else's domain name",
                )
    elif bare_domain and not kind:
        r.add(
            "helo-bare-domain",
            "warning",
            f"HELO is the bare domain {hname}, not a host name; nothing recorded ties {h.ip} "
            f"to {hname} (anyone can say it; --live checks whether it resolves to {h.ip})",
        )


# --------------------------------------------------------------------------------------------
# chain, time, boundary
# --------------------------------------------------------------------------------------------


def _chain_matches(upper: Hop, lower: Hop) -> bool:
    """Does ``lower.by`` name the host that ``upper`` received the message from?"""
    by = _norm(lower.by)
    if not by or not upper.parsed:
        return True
    names = _names_of(upper)
    kind = ip_kind(upper.ip)
    if kind and upper.by:
        # a loopback sender is the receiving host itself; a private one any host of its network
        names.add(_norm(upper.by))
    if by in names or parse_ip(by)[0] == upper.ip:
        return True
    if "." not in by:  # short internal names ("localhost", "exch01") say nothing either way
        return True
    borg = org_domain(by)
    return any(borg and org_domain(n) == borg for n in names if not parse_ip(n)[0])


def _chain_and_time(reports: list[HopReport], below_from: int | None) -> None:
    """Compare each hop with the one above it. ``below_from``: first index that is unverified."""
    for upper, lower in itertools.pairwise(reports):
        forged_zone = below_from is not None and lower.index >= below_from
        sev: Severity = "warning" if forged_zone else "info"
        suffix = " (below the trust boundary: looks forged)" if forged_zone else ""
        if upper.hop.parsed and lower.hop.by and not _chain_matches(upper.hop, lower.hop):
            lower.add(
                "chain-break",
                sev,
                f"this hop says it was received by {lower.hop.by}, but hop {upper.index} got the "
                f"message from {_peer(upper.hop)}{suffix}",
            )
        if upper.hop.ts is not None and lower.hop.ts is not None:
            delta = lower.hop.ts - upper.hop.ts
            if delta > SKEW:
                lower.add(
                    "time-backwards",
                    sev,
                    f"time goes backwards: dated {_dur(delta)} after hop {upper.index}, which "
                    f"received the message later{suffix}",
                )
            elif -delta > 86400:
                upper.add("slow-hop", "info", f"{_dur(delta)} passed since hop {lower.index}")


def _find_boundary(reports: list[HopReport]) -> tuple[str, int | None]:
    """("inbound", idx) | ("outbound", idx) | ("none", None)."""
    if reports and reports[0].ours_by:
        for r in reports:
            if not r.ours_by:
                return "inbound", r.index
            if r.hop.parsed and not r.ours_from and not ip_kind(r.hop.ip):
                return "inbound", r.index
        return "inbound", None
    for r in reports:
        if r.ours_from and not r.ours_by:
            return "outbound", r.index
    return "none", None


# --------------------------------------------------------------------------------------------
# our MTA or not
# --------------------------------------------------------------------------------------------


def _our_mta_hops(reports: list[HopReport], start: int) -> list[HopReport]:
    """Hops at or below index ``start`` written by our servers (they carry our queue id)."""
    return [r for r in reports if r.index >= start and r.ours_by]


def _decide(
    reports: list[HopReport],
    idx: int,
    me: Identity,
    message_id: str,
    lookup: MessageLookup | None,
    egress: EgressLookup | None,
    notes: list[str],
) -> Verdict:
    r = reports[idx - 1]
    h = r.hop
    ev: list[str] = [f"hop {idx}: our address {h.ip} handed the message to {h.by or '?'}"]
    ours_helo = sorted(me.helo_names or me.names)
    helo = _norm(h.helo.strip("[]"))
    helo_ok: bool | None = None
    if ours_helo and helo:
        helo_ok = helo in me.helo_names or helo in me.names
        if helo_ok:
            ev.append(f"HELO {h.helo} is our MTA's HELO name")
        else:
            ev.append(f"HELO {h.helo} is not our MTA's HELO ({', '.join(ours_helo)})")
    elif not ours_helo:
        notes.append("our HELO name is unknown (no [identity] helo_names and no postconf)")
    below = _our_mta_hops(reports, idx + 1)
    hdr_qid = ""
    for b in below:
        if b.hop.id:
            hdr_qid = b.hop.id
            ev.append(
                f"hop {b.index} was written by our server {b.hop.by}"
                + (f" ({b.hop.mta})" if b.hop.mta else "")
                + f" with id {b.hop.id}"
            )
            break
    if not below:
        ev.append(f"no Received line below hop {idx} was written by one of our servers")

    stored: list[Any] = []
    store_checked = False
    if lookup is not None and message_id:
        try:
            stored = list(lookup(message_id=message_id, around=h.ts, window=WINDOW * 24))
            store_checked = True
        except Exception as exc:  # a broken store is a note, never a verdict
            notes.append(f"store look-up failed: {exc}")
    elif lookup is not None and not message_id:
        notes.append("the message has no Message-ID: the store cannot be searched")
    if stored:
        m = stored[0]
        ev.append(
            f"Message-ID {message_id} is in our MTA's log: queue id {m.qid} on {m.host}, "
            f"arrived {_when(m.arrival)}"
        )
    elif store_checked:
        ev.append(f"Message-ID {message_id} is not in our MTA's logs (±{_dur(WINDOW * 24)})")

    conns: list[Any] = []
    if egress is not None and h.ts is not None:
        try:
            conns = list(egress(saddr=h.ip, around=h.ts, window=WINDOW))
        except Exception as exc:
            notes.append(f"egress look-up failed: {exc}")
        for c in conns[:5]:
            who = "our MTA" if getattr(c, "mta", False) else "NOT our MTA"
            ev.append(
                f"egress: {c.comm or c.exe} (pid {c.pid}, user {c.user or '?'}; {who}) connected "
                f"from {h.ip} to {c.daddr}:{c.dport} at {_when(c.ts)}"
            )
    foreign = [c for c in conns if not getattr(c, "mta", False)]

    if stored:
        q = stored[0].qid
        return Verdict("postfix", f"left through Postfix (queue id {q})", "high", idx, q, ev)
    if helo_ok is False and not below:
        conf: Literal["high", "medium", "low"] = "high" if (store_checked or foreign) else "medium"
        return Verdict(
            "direct",
            "not in our MTA's logs: sent directly from this IP by another program"
            if store_checked
            else "sent directly from this IP by another program, not by our MTA",
            conf,
            idx,
            "",
            ev,
        )
    if helo_ok and hdr_qid and not store_checked:
        return Verdict(
            "postfix",
            f"left through Postfix (queue id {hdr_qid}, from the Received header)",
            "medium",
            idx,
            hdr_qid,
            ev,
        )
    if helo_ok and not store_checked:
        return Verdict(
            "postfix", "probably left through our MTA (HELO matches)", "low", idx, hdr_qid, ev
        )
    if helo_ok is False and below:
        return Verdict(
            "unknown",
            "contradictory: a hop by our server below, but a HELO our MTA does not use",
            "low",
            idx,
            hdr_qid,
            ev,
        )
    if store_checked and foreign:
        return Verdict(
            "direct",
            "not in our MTA's logs: sent directly from this IP by another program",
            "high",
            idx,
            "",
            ev,
        )
    return Verdict(
        "unknown",
        "cannot tell whether our MTA sent it"
        + (" (Message-ID not in our logs, which may not cover that time)" if store_checked else ""),
        "low",
        idx,
        hdr_qid,
        ev,
    )


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def analyse(
    hops: Sequence[Hop],
    me: Identity,
    *,
    message_id: str = "",
    lookup: MessageLookup | None = None,
    egress: EgressLookup | None = None,
) -> TraceReport:
    """Findings for every hop and the verdict. ``hops`` top (newest) first."""
    reports = [HopReport(i + 1, h) for i, h in enumerate(hops)]
    notes: list[str] = []
    if not (me.ips or me.names or me.helo_names):
        notes.append("our identity is unknown: set [identity] ips/names/helo_names")
    for r in reports:
        h = r.hop
        r.ours_by = bool(h.by) and (me.is_our_name(h.by) or me.is_our_ip(h.by))
        r.ours_from = h.parsed and me.is_our_ip(h.ip)
        _hop_findings(r, me)

    direction, idx = _find_boundary(reports)
    if direction == "inbound" and idx is not None:
        b = reports[idx - 1]
        b.add(
            "boundary",
            "info",
            f"first hop outside our own servers: {_peer(b.hop)}"
            if b.hop.parsed
            else "first hop not written by our servers",
        )
        _chain_and_time(reports, idx + 1)
        verdict = Verdict(
            "inbound",
            f"received by our server {b.hop.by} from {_peer(b.hop)}; the {len(reports) - idx} "
            "hop(s) below were written elsewhere and cannot be verified"
            if b.hop.parsed
            else f"hops from {idx} down were not written by our servers",
            "high" if b.hop.parsed else "medium",
            idx,
        )
    elif direction == "inbound":
        _chain_and_time(reports, None)
        verdict = Verdict("inbound", "every hop was written by our own servers", "high")
    elif direction == "outbound" and idx is not None:
        b = reports[idx - 1]
        b.add(
            "boundary",
            "info",
            f"hand-over from our address {b.hop.ip} to {b.hop.by or '?'}: the first hop outside "
            "our own servers",
        )
        _chain_and_time(reports, idx + 1)
        verdict = _decide(reports, idx, me, message_id, lookup, egress, notes)
    else:
        _chain_and_time(reports, None)
        ours = ", ".join(sorted(me.ips)[:4]) or "unknown"
        verdict = Verdict(
            "not-ours", f"no hop involves our servers (our addresses: {ours})", "medium"
        )
    if not reports:
        verdict = Verdict("unknown", "the message has no Received headers", "low")
    return TraceReport(reports, verdict, message_id, notes)


# --------------------------------------------------------------------------------------------
# default look-ups (store, egress); imported lazily so the forensics package works without them
# --------------------------------------------------------------------------------------------


def store_lookup(bind: Any) -> MessageLookup | None:
    """A :class:`MessageLookup` over the mailwarden store, or None if the store lacks queries."""
    try:
        from mailwarden.store.queries import find_messages
    except ImportError:
        return None

    def lookup(*, message_id: str, around: float | None, window: float) -> Sequence[Any]:
        found = find_messages(bind, message_id=message_id, around=around, window=window)
        if not found and around is not None:  # the hop date may be off: any time will do
            found = find_messages(bind, message_id=message_id)
        return found

    return lookup


def egress_lookup(bind: Any) -> EgressLookup | None:
    """An :class:`EgressLookup` over the egress collectors' ``egress_events`` table, if any."""
    try:
        from sqlalchemy import select

        from mailwarden.store.egress import egress_events as ev
    except ImportError:
        return None

    def lookup(*, saddr: str, around: float, window: float) -> Sequence[Any]:
        q = (
            select(ev)
            .where(ev.c.saddr == saddr, ev.c.ts.between(around - window, around + window))
            .where(ev.c.dport.in_([25, 465, 587]))
            .order_by(ev.c.ts)
            .limit(50)
        )
        with bind.connect() as conn:
            return list(conn.execute(q).all())

    return lookup
