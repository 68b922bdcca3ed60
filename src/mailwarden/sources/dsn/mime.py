"""MIME layer of the bounce parser: bytes -> :class:`Mail`, a flattened, decoded view.

Uses the stdlib :mod:`email` package with ``policy=compat32``. Why compat32 and not
``policy.default``: bounce mail is often malformed (8-bit headers, broken encoded-words,
missing boundaries, headers of the returned message with garbage). compat32 never raises on
such input, it records defects and hands back raw strings; ``policy.default`` parses header
values lazily into structured objects, which can raise late (on first access) on hostile
addresses or dates, and costs more. We decode the few headers we need ourselves.

Hostile input is bounded here and nowhere else: the whole message (``MAX_INPUT``), the
nesting depth walked (``MAX_DEPTH``), the number of parts (``MAX_PARTS``), the decoded text
kept per part (``MAX_TEXT``) and the length of any single line handed to the format parsers
(``MAX_LINE``). Beyond a limit the rest is dropped (never an exception, never a hang).
"""

from __future__ import annotations

import email.header
import re
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from html.parser import HTMLParser

from mailwarden.errors import SourceError

MAX_INPUT = 64 * 1024 * 1024  # bytes of the whole message
MAX_DEPTH = 24  # MIME nesting levels walked
MAX_PARTS = 500  # leaf parts looked at
MAX_TEXT = 512 * 1024  # characters of decoded text kept per part
MAX_LINE = 8192  # characters per line given to the format parsers
MAX_BOUNDARIES = 256  # multipart boundaries declared (the email package is quadratic in them)

#: Marker lines the flattened body uses between parts (Sisimai's convention, so that the
#: format parsers can find the machine-readable part and the returned message in one text).
MARK_STATUS = "Content-Type: message/delivery-status"
MARK_FEEDBACK = "Content-Type: message/feedback-report"
MARK_RFC822 = "Content-Type: message/rfc822"
MARK_HEADERS = "Content-Type: text/rfc822-headers"


@dataclass(slots=True)
class Mail:
    """A bounce message, decoded and flattened.

    ``headers`` holds the first occurrence of each header, lower-cased name, decoded and
    unfolded. ``text`` is the human-readable part(s) in order (HTML turned to text), up to
    the returned message. ``status`` is the content of every message/delivery-status part
    (and ``feedback`` of message/feedback-report), as ``Name: value`` lines. ``original``
    holds the headers of the returned message, ``flat`` everything in reading order with the
    ``MARK_*`` lines in between parts.
    """

    headers: dict[str, str] = field(default_factory=dict)
    received: list[str] = field(default_factory=list)
    content_type: str = ""
    text: str = ""
    status: str = ""
    feedback: str = ""
    original: dict[str, str] = field(default_factory=dict)
    original_text: str = ""
    flat: str = ""
    defects: int = 0
    attached: bytes = b""  # the returned message (message/rfc822) as bytes, when there is one
    long_text: str = ""  # ``text`` without the line-length cap (for JSON bodies)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def subject(self) -> str:
        return self.header("subject")

    @property
    def sender(self) -> str:
        return self.header("from")


def clean(s: str) -> str:
    """Make text safe to handle: surrogates (undecodable bytes) replaced, NULs removed."""
    if any("\ud800" <= c <= "\udfff" for c in s):
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return s.replace("\x00", "")


def decode_header(value: object) -> str:
    """Decode RFC 2047 encoded-words and unfold; never raises, returns ``""`` for nothing."""
    if value is None:
        return ""
    try:
        raw = clean(str(value))
    except Exception:
        return ""
    try:
        # decode_header keeps the whitespace of unencoded chunks and drops it between two
        # encoded-words (RFC 2047 section 6.2), so the chunks join with "".
        out: list[str] = []
        for chunk, charset in email.header.decode_header(raw):
            if isinstance(chunk, bytes):
                out.append(_decode_bytes(chunk, charset or "ascii"))
            else:
                out.append(chunk)
        text = "".join(out)
    except Exception:
        text = raw
    return re.sub(r"\s*\n\s*", " ", clean(text)).strip()


def _decode_bytes(data: bytes, charset: str) -> str:
    cs = (charset or "utf-8").strip().strip('"').lower()
    if cs in ("unknown-8bit", "x-unknown", "8bit", "binary", "us-ascii", "ascii", ""):
        cs = "utf-8"
    try:
        return data.decode(cs, "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


class _HtmlText(HTMLParser):
    """HTML -> text, block elements on their own line, script/style dropped."""

    _BLOCK = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    p = _HtmlText()
    try:
        p.feed(html)
        p.close()
    except Exception:
        return re.sub(r"<[^>]{0,2000}>", " ", html)
    text = "".join(p.out)
    return "\n".join(line.strip() for line in text.splitlines())


def _payload_bytes(part: Message) -> bytes:
    """The part body with its transfer encoding undone (broken base64: best effort)."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def part_text(part: Message) -> str:
    """Decoded text of a leaf part, truncated to ``MAX_TEXT``."""
    data = _payload_bytes(part)[: MAX_TEXT * 4]
    text = _decode_bytes(data, part.get_content_charset() or "utf-8")
    text = clean(text.replace("\r\n", "\n").replace("\r", "\n"))[:MAX_TEXT]
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text


def _fields_text(part: Message) -> str:
    """Text of a message/delivery-status or message/feedback-report part.

    compat32 parses these into a list of header blocks; a transfer-encoded one (base64 or
    quoted-printable, seen from some MTAs) is parsed as garbage, so it is decoded from the
    raw text instead.
    """
    payload = part.get_payload()
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if isinstance(payload, list):
        blocks: list[str] = []
        for block in payload[:MAX_PARTS]:
            if not isinstance(block, Message):
                continue
            lines = [f"{k}: {clean(str(v))}" for k, v in block.items()]
            body = block.get_payload()
            if isinstance(body, str) and body.strip():
                lines.append(clean(body))
            blocks.append("\n".join(lines))
        text = "\n\n".join(blocks)
        if cte in ("base64", "quoted-printable"):
            import base64
            import quopri

            raw = text.encode("utf-8", "replace")
            try:
                dec = base64.b64decode(raw) if cte == "base64" else quopri.decodestring(raw)
                text = dec.decode("utf-8", "replace")
            except Exception:
                pass
        return clean(text)[:MAX_TEXT]
    return part_text(part)


def _headers_of(msg: Message) -> tuple[dict[str, str], list[str]]:
    heads: dict[str, str] = {}
    received: list[str] = []
    for k, v in msg.items():
        name = clean(str(k)).strip().lower()
        if name == "received":
            received.append(re.sub(r"\s+", " ", clean(str(v))).strip())
            continue
        if name not in heads:
            heads[name] = decode_header(v)
    return heads, received


def _header_text(msg: Message) -> str:
    return "\n".join(f"{clean(str(k))}: {decode_header(v)}" for k, v in msg.items())


_FROM_LINE = re.compile(rb"^From \S+\s+.*\d\d:\d\d(?::\d\d)?\s.*$|^From \S+\s+.*\d{4}\s*$", re.M)


def split_mbox(data: bytes | str) -> list[bytes]:
    """The messages of an mbox (``From `` separator lines); a single message as it is."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if not data.lstrip().startswith(b"From ") or len(data) > MAX_INPUT:
        return [data]
    starts = [m.start() for m in _FROM_LINE.finditer(data)]
    if len(starts) < 2:
        return [data]
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)][:1000]


def load(data: bytes | str) -> Mail:
    """Parse raw message bytes into a :class:`Mail`.

    Raises :class:`SourceError` when the input is too large or is not a mail message at all
    (no header). A mail that is simply not a bounce still loads; the format parsers decide.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > MAX_INPUT:
        raise SourceError(f"message too large ({len(data)} bytes, limit {MAX_INPUT})")
    data = data.replace(b"\x00", b"")
    head = data[:16384].lstrip()
    if head.startswith(b"From ") and b"\n" in head:
        # mbox "From " line: drop it, the email package would take it as a defect
        data = data.lstrip()
        data = data[data.index(b"\n") + 1 :]
    if not re.match(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:", data.lstrip()[:1000]):
        raise SourceError("not a mail message (no header at the start)")
    boundaries = len(re.findall(rb"(?i)boundary\s*=", data))
    if boundaries > MAX_BOUNDARIES:
        raise SourceError(
            f"MIME structure too complex ({boundaries} multipart boundaries, "
            f"limit {MAX_BOUNDARIES})"
        )
    try:
        msg = BytesParser(policy=policy.compat32).parsebytes(data)
    except RecursionError as exc:
        raise SourceError("MIME structure nested too deeply") from exc
    except Exception as exc:
        raise SourceError(f"unreadable MIME structure: {exc}") from exc

    mail = Mail()
    mail.headers, mail.received = _headers_of(msg)
    mail.content_type = msg.get_content_type()
    texts: list[str] = []
    status: list[str] = []
    feedback: list[str] = []
    flat: list[str] = []
    seen = 0
    in_original = False

    def walk(part: Message, depth: int) -> None:
        nonlocal seen, in_original
        if depth > MAX_DEPTH or seen >= MAX_PARTS:
            return
        seen += 1
        mail.defects += len(getattr(part, "defects", []) or [])
        ctype = part.get_content_type()
        payload = part.get_payload()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            text = _fields_text(part)
            status.append(text)
            flat.append(f"{MARK_STATUS}\n\n{text}")
        elif ctype == "message/feedback-report":
            text = _fields_text(part)
            feedback.append(text)
            flat.append(f"{MARK_FEEDBACK}\n\n{text}")
        elif ctype in ("message/rfc822", "message/global") and isinstance(payload, list):
            inner = payload[0] if payload and isinstance(payload[0], Message) else None
            if inner is None:
                return
            if not mail.original:
                mail.original, _ = _headers_of(inner)
                mail.original_text = _header_text(inner)
                try:
                    mail.attached = inner.as_bytes()[:MAX_INPUT]
                except Exception:
                    mail.attached = b""
            flat.append(f"{MARK_RFC822}\n\n{_header_text(inner)}")
            in_original = True
        elif ctype in ("text/rfc822-headers", "text/global-headers"):
            text = part_text(part)
            if not mail.original:
                try:
                    inner = HeaderParser(policy=policy.compat32).parsestr(text)
                    mail.original, _ = _headers_of(inner)
                except Exception:
                    pass
                mail.original_text = text
            flat.append(f"{MARK_HEADERS}\n\n{text}")
            in_original = True
        elif part.is_multipart() and isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    walk(sub, depth + 1)
        elif part.get_content_maintype() == "text" or (
            isinstance(payload, str) and (depth == 0 or part.get_content_maintype() == "multipart")
        ):
            # text parts; also a multipart whose boundary never occurs (the email package
            # leaves the body as one string) and a non-text top level: read as plain text
            text = part_text(part)
            if not in_original:
                texts.append(text)
            flat.append(text)

    walk(msg, 0)
    mail.text = "\n".join(texts)
    mail.long_text = mail.text
    mail.status = "\n\n".join(status)
    mail.feedback = "\n\n".join(feedback)
    mail.flat = "\n".join(_cap_lines(t) for t in flat)
    mail.text = _cap_lines(mail.text)
    return mail


def _cap_lines(text: str) -> str:
    if len(text) < MAX_LINE or all(len(x) <= MAX_LINE for x in text.split("\n")):
        return text
    return "\n".join(x[:MAX_LINE] for x in text.split("\n"))
