"""Read the header block of a message (``.eml``, mbox-style, or pasted Received lines).

Only headers matter to ``trace``: the reader stops at the first empty line, never decodes a
body, and is bounded (:data:`MAX_HEADER_BYTES` of header, :data:`MAX_FIELD` characters per
field). Lines that are neither a field nor a continuation are counted, not fatal. A bare
Received value pasted on its own (``from X ([ip]) by Y ...``, what an abuse desk forwards) is
accepted as one Received header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_FIELD = 64 * 1024

_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:(.*)$")  # RFC 5322 ftext, then ':'


@dataclass(frozen=True, slots=True)
class Headers:
    """What trace needs from a message's header block."""

    received: list[str] = field(default_factory=list)  # values, top (newest) first, unfolded
    message_id: str = ""
    date: str = ""
    sender: str = ""  # From:
    subject: str = ""
    malformed: int = 0  # lines that were neither a field nor a continuation
    truncated: bool = False  # the header block was longer than MAX_HEADER_BYTES


def _header_block(data: bytes) -> tuple[bytes, bool]:
    head = data[:MAX_HEADER_BYTES]
    cut = len(data) > MAX_HEADER_BYTES
    ends = [i for i in (head.find(b"\n\n"), head.find(b"\n\r\n")) if i >= 0]
    if ends:
        return head[: min(ends)], False
    return head, cut


def read_headers(data: bytes) -> Headers:
    """Split ``data`` into header fields and keep the ones trace uses."""
    block, truncated = _header_block(data)
    text = block.decode("utf-8", "replace").replace("\x00", " ")
    lines = text.split("\n")
    if lines and lines[0].startswith("From "):  # mbox separator
        lines = lines[1:]
    fields: list[tuple[str, list[str]]] = []
    size = 0  # characters kept of the current field (continuations past MAX_FIELD dropped)
    malformed = 0
    for line in lines:
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line[0] in " \t":
            if fields:
                if size < MAX_FIELD:
                    fields[-1][1].append(line)
                    size += len(line)
            else:
                malformed += 1
            continue
        m = _FIELD.match(line)
        if m:
            fields.append((m.group(1).lower(), [m.group(2)]))
            size = len(m.group(2))
        else:
            malformed += 1
    if not fields and text.lstrip().lower().startswith("from "):
        # a pasted Received value without its field name
        return Headers(received=[" ".join(text.split())], truncated=truncated)
    out: dict[str, str] = {}
    received: list[str] = []
    for name, parts in fields:
        value = " ".join(" ".join(parts).split())[:MAX_FIELD]
        if name == "received":
            received.append(value)
        elif name not in out:
            out[name] = value
    return Headers(
        received=received,
        message_id=out.get("message-id", ""),
        date=out.get("date", ""),
        sender=out.get("from", ""),
        subject=out.get("subject", ""),
        malformed=malformed,
        truncated=truncated,
    )
