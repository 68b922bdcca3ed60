"""Forensics: parse Received headers (RFC 5321 first, MTA variants second) and decide whether a
message left through our MTA or directly from another program on our IP.

Public API (``docs/trace-json.md`` documents the JSON form):

* :func:`parse_received` (``received``): one header value -> :class:`Hop`;
* :func:`read_headers` (``message``): message bytes -> :class:`Headers` (Received values, top
  first, Message-ID);
* :func:`analyse` (``trace``): hops + our identity (+ optional store/egress look-ups) ->
  :class:`TraceReport` with findings per hop and a :class:`Verdict`;
* :func:`trace_message` and :func:`report_json` (``run``): the whole ``mailwarden trace``;
  :func:`our_identity` is the identity it uses (config, postconf, master.cf, interfaces);
* :func:`run_live` (``live``): DNS checks added to a report's hops.
"""

from __future__ import annotations

from typing import Any

from mailwarden.forensics.message import Headers, read_headers
from mailwarden.forensics.received import Hop, Tls, parse_received

__all__ = [
    "Finding",
    "Headers",
    "Hop",
    "HopReport",
    "Tls",
    "TraceReport",
    "Verdict",
    "analyse",
    "our_identity",
    "parse_received",
    "read_headers",
    "report_json",
    "run_live",
    "trace_message",
]

_LAZY = {
    "Finding": "trace",
    "HopReport": "trace",
    "TraceReport": "trace",
    "Verdict": "trace",
    "analyse": "trace",
    "our_identity": "run",
    "report_json": "run",
    "trace_message": "run",
    "run_live": "live",
}


def __getattr__(name: str) -> Any:
    """Import the analysis modules only when used (they pull in pydantic settings, dnspython)."""
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'mailwarden.forensics' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"mailwarden.forensics.{mod}"), name)
