"""Parse the reason text of a Postfix status line (or a bare DSN diagnostic) into a
:class:`~mailwarden.events.Reply`.

Shapes understood (Postfix 3.x ``smtp``/``lmtp``/``error`` wording):

* ``host X[ip] said: 550 5.7.1 text (in reply to RCPT TO command)``: the remote's reply;
* ``host X[ip] refused to talk to me: 554 text``: a greeting refusal (``command="CONNECT"``);
* ``connect to X[ip]:25: Connection refused`` / ``timed out``: Postfix's own, no code;
* ``lost connection with X[ip] while sending RCPT TO``, ``conversation with X[ip] timed out
  while receiving the initial server greeting``: Postfix's own, the stage from the wording;
* ``Host or domain name not found. Name service error for name=... type=MX: ...``: DNS;
* TLS failures (``TLS is required, but was not offered by host X[ip]``, ``Cannot start TLS``...);
* wrappers Postfix adds: ``delivery temporarily suspended: <inner>`` and DSN type prefixes
  (``smtp; 550 5.1.1 <x@y>: user unknown``);
* multi-line replies kept inline by Postfix (``550-5.7.1 a 550-5.7.1 b 550 5.7.1 c``): every
  continuation prefix is removed and the text folded to one line.

``remote`` is True only when the text was written by the remote server. Never raises.
"""

from __future__ import annotations

import re

from mailwarden.events import Reply

_WRAPPERS = re.compile(r"(?:delivery temporarily suspended|delivery deferred|deferred): ", re.I)
_DSN_TYPE = re.compile(r"(?:smtp|x-postfix|x-unix|x-local|lmtp|x-exim|x-qmail);\s*", re.I)
_HOST_REPLY = re.compile(
    r"host (?P<host>[^\s\[\]]*)\[(?P<ip>[^\]]*)\](?::\d+)? (?P<verb>[A-Za-z][A-Za-z ]{0,40}?): "
    r"(?P<rest>.*)",
    re.S,
)
_NAME_IP = re.compile(r"(?:host |with |to |by )(?P<host>[^\s\[\]]*)\[(?P<ip>[^\]]*)\]")
_CONNECT = re.compile(r"connect to (?P<host>[^\s\[\]]*)\[(?P<ip>[^\]]*)\](?::\d+)?: ")
_WHILE = re.compile(
    r"(?:lost connection with|conversation with) (?P<host>[^\s\[\]]*)\[(?P<ip>[^\]]*)\]"
    r"(?::\d+)? .*?while (?P<what>.*)"
)
_IN_REPLY = re.compile(r"\s*\(in reply to (?P<cmd>[A-Za-z][A-Za-z -]{0,30}?) command\)\s*$")
_CODE = re.compile(
    r"(?P<code>[245][0-9][0-9])(?:(?P<sep>[ -]|: ?)(?P<enh>[245]\.\d{1,3}\.\d{1,3})\b)?"
)
_ENH_ONLY = re.compile(r"(?P<enh>[245]\.\d{1,3}\.\d{1,3})(?:\s|$)")

# "while <what>" wording of smtp(8) -> SMTP stage; first match wins.
_STAGES: tuple[tuple[str, str], ...] = (
    ("greeting", "CONNECT"),
    ("end of data", "end of DATA"),
    ("message body", "DATA"),
    ("data command", "DATA"),
    ("rcpt to", "RCPT TO"),
    ("mail from", "MAIL FROM"),
    ("ehlo", "EHLO"),
    ("lhlo", "LHLO"),
    ("helo", "HELO"),
    ("tls", "STARTTLS"),
    ("auth", "AUTH"),
    ("sasl", "AUTH"),
    ("xforward", "XFORWARD"),
    ("quit", "QUIT"),
)


def _fold(text: str) -> str:
    return " ".join(text.split())


def _stage(what: str) -> str:
    low = what.lower()
    for key, stage in _STAGES:
        if key in low:
            return stage
    return ""


_CONT_CACHE: dict[tuple[str, str, bool], re.Pattern[str]] = {}


def _continuation(code: str, enh: str, multi: bool) -> re.Pattern[str]:
    """Pattern of the inline continuation prefixes of a multi-line reply with this code."""
    key = (code, enh, multi)
    pat = _CONT_CACHE.get(key)
    if pat is None:
        # "550-5.7.1 ", "550-", and the last line's "550 5.7.1 " (or "550 " when multi-line)
        alts = [re.escape(code) + "-" + (re.escape(enh) + r"(?=\s|$)" if enh else "")]
        if enh:
            alts.append(re.escape(code) + "-")
            alts.append(re.escape(code) + " " + re.escape(enh) + r"(?=\s|$)")
        if multi:  # a last line without the enhanced code: "550-5.7.1 a 550 b"
            alts.append(re.escape(code) + r"(?= )")
        pat = re.compile(r"(?:^|(?<=\s))(?:" + "|".join(alts) + r")\s?")
        if len(_CONT_CACHE) < 10_000:
            _CONT_CACHE[key] = pat
    return pat


def split_code(text: str) -> tuple[int | None, str, str]:
    """``"550-5.7.1 a 550-5.7.1 b 550 5.7.1 c"`` -> ``(550, "5.7.1", "a b c")``.

    Removes the leading reply code and enhanced status code and every inline continuation
    prefix of the same code; folds white space. Text without a leading code comes back folded,
    with ``code=None`` (an enhanced code alone at the start is still taken).
    """
    s = text.strip()
    m = _CODE.match(s)
    if m is None or (len(s) > 3 and s[3] not in " -\t:"):
        e = _ENH_ONLY.match(s)
        if e is not None:
            return None, e.group("enh"), _fold(s[e.end() :])
        return None, "", _fold(s)
    code_s = m.group("code")
    enh = m.group("enh") or ""
    multi = len(s) > 3 and s[3] == "-"
    body = s[m.end() :]
    if not enh and body[:1] in ("-", " ", ":"):
        body = body[1:]
    if (multi or enh) and code_s in body:
        body = _continuation(code_s, enh, multi).sub(" ", body)
    return int(code_s), enh, _fold(body)


def _remote(
    rest: str, host: str, ip: str, command: str, raw: str, *, default_cmd: str = ""
) -> Reply:
    m = _IN_REPLY.search(rest)
    if m is not None:
        command = m.group("cmd")
        rest = rest[: m.start()]
    code, enh, text = split_code(rest)
    return Reply(
        code=code,
        enhanced=enh,
        text=text,
        command=command or default_cmd,
        host=host,
        ip=ip,
        remote=True,
        raw=raw,
    )


def parse_reply(text: str) -> Reply:
    """Parse a status line's reason (the text in its last parentheses) or a bare diagnostic."""
    raw = text
    s = text.strip()
    # Postfix's own wrappers around an earlier reason; the inner text decides.
    while True:
        m = _WRAPPERS.match(s) or _DSN_TYPE.match(s)
        if m is None:
            break
        s = s[m.end() :]
    m = None
    if s.startswith("host "):
        m = _HOST_REPLY.match(s)
    elif "host " in s:  # "TLS is required, but host X[ip] refused to start TLS: 454 ..."
        m = _HOST_REPLY.search(s)
    if m is not None:
        verb = m.group("verb")
        rest = m.group("rest")
        host, ip = m.group("host"), m.group("ip")
        lverb = verb.lower()
        if lverb == "said" or _CODE.match(rest.lstrip()):
            if "talk to me" in lverb:
                cmd = "CONNECT"
            elif "tls" in lverb:
                cmd = "STARTTLS"
            else:
                cmd = ""
            return _remote(rest, host, ip, cmd, raw)
    m = _CONNECT.match(s) if s.startswith("connect to ") else None
    if m is not None:
        return Reply(None, "", _fold(s), "CONNECT", m.group("host"), m.group("ip"), False, raw)
    m = _WHILE.match(s) if s[:1] in ("l", "c") else None
    if m is not None:
        return Reply(
            None, "", _fold(s), _stage(m.group("what")), m.group("host"), m.group("ip"), False, raw
        )
    code, enh, body = split_code(s)
    if code is not None:
        # a bare reply, e.g. from a DSN Diagnostic-Code or "250 2.0.0 Ok: queued as X"
        m2 = _IN_REPLY.search(body)
        cmd = ""
        if m2 is not None:
            cmd = m2.group("cmd")
            body = body[: m2.start()].rstrip()
        return Reply(code, enh, body, cmd, "", "", True, raw)
    # Postfix's own text (DNS errors, TLS policy, transport errors, retry: reasons)
    host = ip = ""
    n = _NAME_IP.search(s)
    if n is not None:
        host, ip = n.group("host"), n.group("ip")
    cmd = "STARTTLS" if "TLS" in s or "certificate" in s.lower() else ""
    return Reply(None, enh, body, cmd, host, ip, False, raw)
