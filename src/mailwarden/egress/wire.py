"""The local socket protocol between the privileged collector (``mailwarden egress run``) and
the unprivileged rest (store writer, ``egress watch``, the daemon).

A unix stream socket; the server writes UTF-8 JSON lines, one object per line, each with a
``type``:

* ``{"type": "hello", "version": 1, "collectors": ["ebpf", "nflog"], "ports": [25, ...],
  "host": "mx1"}``: first line on every connection;
* ``{"type": "connect", "ts": ..., "source": "ebpf", "daddr": ..., "dport": 25, ...}``: one
  :class:`~mailwarden.events.EgressConnect` (every field, by name; tuples as arrays);
* ``{"type": "stats", "ts": ..., "ebpf_emitted": n, "ebpf_dropped": n, "nflog_lost": n,
  "clients": n}``: every 10 s.

Clients only read; unknown types and unknown fields must be ignored (forward compatibility).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from mailwarden.errors import ValidationError
from mailwarden.events import EgressConnect

VERSION = 1
_FIELDS = {f.name: f for f in dataclasses.fields(EgressConnect)}


def encode(ev: EgressConnect) -> bytes:
    d: dict[str, Any] = {"type": "connect"}
    for name in _FIELDS:
        d[name] = getattr(ev, name)
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encode_msg(kind: str, **fields: Any) -> bytes:
    return json.dumps({"type": kind, **fields}, separators=(",", ":")).encode() + b"\n"


def _int_or_none(v: Any, name: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValidationError(f"egress event: {name} must be an integer")
    return v


def decode(obj: dict[str, Any]) -> EgressConnect:
    """A ``connect`` message back into an event, type-checked field by field."""
    kw: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        if name not in obj:
            continue
        val = obj[name]
        t = str(f.type)
        if t == "str":
            if not isinstance(val, str):
                raise ValidationError(f"egress event: {name} must be a string")
        elif t == "float":
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise ValidationError(f"egress event: {name} must be a number")
            val = float(val)
        elif t in ("int", "int | None"):
            val = _int_or_none(val, name)
            if t == "int" and val is None:
                raise ValidationError(f"egress event: {name} is required")
        elif t == "bool":
            val = bool(val)
        elif name == "cmdline":
            if not isinstance(val, list) or not all(isinstance(a, str) for a in val):
                raise ValidationError("egress event: cmdline must be a list of strings")
            val = tuple(val)
        elif name == "parents":
            if not isinstance(val, list):
                raise ValidationError("egress event: parents must be a list")
            val = tuple((int(p[0]), str(p[1])) for p in val)
        kw[name] = val
    for req in ("ts", "source", "daddr", "dport"):
        if req not in kw:
            raise ValidationError(f"egress event: missing {req}")
    return EgressConnect(**kw)


def decode_line(line: bytes) -> dict[str, Any]:
    """Parse one line; raises ValidationError for anything that is not a JSON object."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"egress socket: bad JSON line: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ValidationError("egress socket: line is not a typed JSON object")
    return obj
