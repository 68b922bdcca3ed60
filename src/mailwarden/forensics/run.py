"""One call for ``trace``: message bytes in, :class:`~.trace.TraceReport` (and its JSON) out.

Wires the pieces together: header reading, Received parsing, our identity (config, then
postconf and the interfaces), the store and egress look-ups when a store exists, and the live
DNS checks on request. The JSON form is documented in ``docs/trace-json.md``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mailwarden.config import Settings
from mailwarden.forensics.message import read_headers
from mailwarden.forensics.received import parse_received
from mailwarden.forensics.trace import (
    EgressLookup,
    MessageLookup,
    TraceReport,
    analyse,
    egress_lookup,
    store_lookup,
)
from mailwarden.identity import Identity, detect_identity

#: More Received lines than this are not analysed (a note says so); real mail has < 50.
MAX_HOPS = 20_000

_UNSET: Any = object()


def our_identity(settings: Settings, *, config_dir: str | None = None) -> Identity:
    """Our identity as :func:`~mailwarden.identity.detect_identity` sees it (config, postconf,
    per-transport HELO names and source addresses from master.cf, interfaces)."""
    return detect_identity(settings.identity, config_dir=config_dir)


def open_store(settings: Settings, notes: list[str]) -> Any:
    """The store's engine if one exists (never creates a database), else None (with a note)."""
    url = settings.db_url()
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            notes.append(f"no mailwarden store at {path}: our MTA's logs were not consulted")
            return None
    try:
        from mailwarden.store.db import open_engine

        return open_engine(url, create=False)
    except Exception as exc:  # StoreError, ImportError, a driver error: a note, not a failure
        notes.append(f"the mailwarden store cannot be opened: {exc}")
        return None


def trace_message(
    data: bytes,
    settings: Settings,
    *,
    live: bool = False,
    use_store: bool = True,
    identity: Identity | None = None,
    lookup: MessageLookup | None = _UNSET,
    egress: EgressLookup | None = _UNSET,
) -> tuple[TraceReport, Identity]:
    """Trace one message. ``lookup``/``egress`` override the store-backed defaults."""
    headers = read_headers(data)
    notes: list[str] = []
    values = headers.received
    if len(values) > MAX_HOPS:
        notes.append(f"{len(values)} Received headers: only the top {MAX_HOPS} were analysed")
        values = values[:MAX_HOPS]
    if headers.truncated:
        notes.append("the header block is larger than the reader's limit: it was cut")
    if headers.malformed:
        notes.append(f"{headers.malformed} malformed header line(s) were skipped")
    me = identity or our_identity(settings)
    engine = None
    if use_store and (lookup is _UNSET or egress is _UNSET):
        engine = open_store(settings, notes)
    if lookup is _UNSET:
        lookup = store_lookup(engine) if engine is not None else None
    if egress is _UNSET:
        egress = egress_lookup(engine) if engine is not None else None
    hops = [parse_received(v) for v in values]
    report = analyse(hops, me, message_id=headers.message_id, lookup=lookup, egress=egress)
    report.notes[:0] = notes
    if live:
        from mailwarden.forensics.live import run_live

        run_live(report.hops, settings.dns)
    if engine is not None:
        engine.dispose()
    return report, me


def hop_json(r: Any) -> dict[str, Any]:
    h = r.hop
    return {
        "index": r.index,
        "parsed": h.parsed,
        "why": h.why,
        "ip": h.ip,
        "port": h.port,
        "rdns": h.rdns,
        "rdns_status": h.rdns_status,
        "helo": h.helo,
        "ident": h.ident,
        "by": h.by,
        "via": h.via,
        "with": h.with_,
        "protocol": h.protocol,
        "id": h.id,
        "for": h.for_,
        "envfrom": h.envfrom,
        "auth": h.auth,
        "tls": {"version": h.tls.version, "cipher": h.tls.cipher, "bits": h.tls.bits},
        "date": h.date,
        "ts": h.ts,
        "mta": h.mta,
        "flags": list(h.flags),
        "ours_by": r.ours_by,
        "ours_from": r.ours_from,
        "findings": [asdict(f) for f in r.findings],
        "live": r.live or None,
        "raw": h.raw,
    }


def report_json(report: TraceReport, me: Identity) -> dict[str, Any]:
    """The documented JSON document (docs/trace-json.md)."""
    v = report.verdict
    return {
        "message_id": report.message_id,
        "hops": [hop_json(r) for r in report.hops],
        "verdict": {
            "kind": v.kind,
            "summary": v.summary,
            "confidence": v.confidence,
            "boundary": v.boundary,
            "queue_id": v.queue_id,
            "evidence": list(v.evidence),
        },
        "notes": list(report.notes),
        "identity": {
            "ips": sorted(me.ips),
            "names": sorted(me.names),
            "helo_names": sorted(me.helo_names),
            "sources": dict(me.sources),
        },
    }
