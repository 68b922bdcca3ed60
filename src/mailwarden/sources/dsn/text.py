"""The human-readable part of a bounce: where the returned message starts, which lines name a
recipient, which lines explain it, and what the explanation says (remote host, SMTP command,
the remote reply itself).

Nearly every MTA writes the same shape: an address on its own line (``<a@b>:``,
``  a@b``, ``a@b<mailto:a@b>``, ``a@b on <date>``) followed by indented or plain lines that
explain it, paragraphs separated by blank lines, and the returned message after a marker line.
:func:`scan` reads that shape; :func:`explain` takes a diagnostic apart. The few MTAs that
write something else have a parser of their own in :mod:`mailwarden.sources.dsn.formats`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailwarden.sources.dsn.record import Rcpt, address, clean_host

#: Lines after which the returned message (or its headers) follows: never read past them.
STOP = re.compile(
    r"""^\s*(?:
        -{2,}\s*(?:original\s+message|returned\s+message|the\s+original\s+message|message\s+text\s+follows|
               below\s+this\s+line\s+is\s+a\s+copy|original\s+message\s+follows|
               this\s+is\s+a\s+copy\s+of\s+(?:the|your)\s+message|unsent\s+message\s+below|
               \s*returned\s+mail\s+follows|start\s+of\s+returned\s+message|
               original\s+message\s+header|headers\s+of\s+the\s+original|message\s+header\s+follows)
       |content-type:\s*(?:message/rfc822|text/rfc822-headers|message/delivery-status|message/feedback-report)
       |original\s+message\s+(?:follows|headers)
       |original\s+message\s*:?\s*$
       |(?:here\s+is\s+a\s+copy\s+of\s+the\s+first\s+part\s+of\s+the\s+message|
          the\s+non-delivered\s+message\s+is\s+attached|
          a\s+copy\s+of\s+the\s+original\s+message\s+below\s+this\s+line|
          below\s+is\s+a\s+copy\s+of\s+the\s+original\s+message|
          below\s+this\s+line\s+is\s+a\s+copy\s+of\s+the\s+message|
          the\s+original\s+message\s+was\s+included\s+as\s+attachment|
          your\s+message\s+reads\s+\(in\s+part\)|
          ----+\s*original\s+message)
       |(?:return-path|received|dkim-signature|x-received|arc-seal|authentication-results):\s
       |\*\*\*\s+message\s+truncated
    )""",
    re.I | re.X,
)

_ADDR = r"[^\s<>\"'(),;:\[\]@]+@[-A-Za-z0-9_]+(?:\.[-A-Za-z0-9_]+)+"

#: A line that names one recipient: optional label, the address (maybe quoted, bracketed,
#: doubled as a mailto: link), then an optional ``: explanation`` or `` on <date>``.
_ADDR_LINE = re.compile(
    rf"""^\s*
    (?:(?:[*\u2022]|-{{1,2}})\s*)?
    (?P<label>(?:rcpt\s+to|recipient|recipient\s+address|address|failed\s+recipient|
               intended\s+recipient|original\s+recipient|final\s+recipient|could\s+not\s+be\s+delivered\s+to|
               unknown\s+user|user\s+unknown|delivery\s+failed|undeliverable\s+to|mailbox\s+is\s+full|
               error-for|your\s+message\s+to|the\s+following\s+message\s+to)\s*:?\s*)?
    ["']?<?(?P<addr>{_ADDR})>?["']?\.?
    (?:\s*<mailto:[^>]*>)?
    (?:\s*<(?P<alias>{_ADDR})>)?
    (?P<paren>\s*\((?:expanded|generated)\s+from:?\s*<?(?P<exp>[^)>]*)>?\))?
    (?:\s*(?P<colon>:)\s*(?P<rest>.*)|\s*\[(?P<bracket>[^\]]*)\]\s*|\s+on\s+\S.*|\s+\((?P<paren_rest>.*)\)|
       \s+(?P<after>[A-Z][A-Za-z]+\s.*)|\s*)$""",
    re.I | re.X,
)

#: Lines that are part of the report's frame, not of an explanation.
_BOILER = re.compile(
    r"""^(?:
        -{3,}|_{3,}|={3,}|\*{3,}
       |(?:the\s+following\s+(?:addresses|address|recipients?)|your\s+message\s+to\s+the\s+following|
           delivery\s+to\s+the\s+following|did\s+not\s+reach\s+the\s+following|this\s+is\s+a\s+permanent|
           unable\s+to\s+deliver|i'm\s+sorry|for\s+further\s+assistance|if\s+you\s+do\s+so|
           if\s+your\s+message\s+was\s+also|status\s+is\s+not\s+included|other\s+delivery\s+status|
           the\s+original\s+message\s+follows|sent\s+by\s+microsoft|diagnostic\s+information\s+for|
           generating\s+server|this\s+message\s+was\s+created|a\s+message\s+that\s+you\s+sent|
           technical\s+details\s+of|delivery\s+has\s+failed\s+to\s+these|
           this\s+is\s+an\s+automatically\s+generated|this\s+is\s+an\s+automated|please\s+do\s+not\s+reply|
           the\s+original\s+message\s+was\s+received\s+at|because:\s*$|was\s+not\s+delivered\s+to:\s*$|
           your\s+message\s*$|original\s+message\s+headers)
    )""",
    re.I | re.X,
)


_GENERATED = re.compile(r"^\s+generated\s+by\s+<?([^\s<>]+@[^\s<>]+?)>?\s*$", re.I)


def cut(text: str) -> list[str]:
    """The lines of ``text`` before the returned message starts."""
    out: list[str] = []
    for line in text.split("\n"):
        if STOP.match(line):
            break
        out.append(line.rstrip())
    return out


@dataclass(slots=True)
class AddrLine:
    addr: str
    rest: str
    label: str
    alias: str


#: Postfix's local delivery to a program or file: ``<"|/usr/bin/procmail"@host> (expanded
#: from <a@b>): Command died with status 1 ...``: the recipient is the address it expanded from.
_QUOTED_LOCAL = re.compile(
    r'^<"(?P<local>[^"]+)"@[^>\s]+>\s*\(expanded\s+from\s+<(?P<exp>[^>\s]+)>\):\s*(?P<rest>.*)$',
    re.I,
)


def addr_line(line: str) -> AddrLine | None:
    """Parse a line that names a recipient, or ``None``."""
    if len(line) > 600 or "@" not in line:
        return None
    s = line.strip()
    q = _QUOTED_LOCAL.match(s)
    if q and address(q.group("exp")):
        return AddrLine(address(q.group("exp")), q.group("rest").strip(), "", q.group("local"))
    if re.match(r"^[45]\d\d[ -]", s) or (
        "..." in s.split("@", 1)[1][:80] and not s.startswith("<")
    ):
        return None
    m = _ADDR_LINE.match(s)
    if not m:
        return None
    addr = address(m.group("addr"))
    if not addr:
        return None
    rest = (
        m.group("rest") or m.group("bracket") or m.group("after") or m.group("paren_rest") or ""
    ).strip()
    alias = address(m.group("exp") or "") if m.group("paren") else ""
    if m.group("alias"):
        # "  pipe@host <real@address>: text" (Exim) names the real recipient second
        alias, addr = addr, address(m.group("alias"))
    return AddrLine(addr, rest, (m.group("label") or "").strip(" :").lower(), alias)


def scan(lines: list[str]) -> list[Rcpt]:
    """Recipients and their explanation from the human text (already :func:`cut`).

    The explanation of a recipient is the rest of its line plus the following lines up to the
    end of the paragraph; when its paragraph has none, the next paragraph (Gmail writes the
    address alone, then "Technical details ..."), else the paragraph before (Lotus Notes).
    """
    recs: list[Rcpt] = []
    paras: list[list[str]] = []  # paragraphs of non-address lines, in order
    owner: list[int] = []  # index of the rcpt a paragraph was attached to (-1: none)
    cur: Rcpt | None = None
    cur_para: list[str] = []
    last_blank = True
    for line in lines:
        s = line.strip()
        if not s:
            if cur_para:
                paras.append(cur_para)
                owner.append(len(recs) - 1 if cur is not None else -1)
                cur_para = []
            last_blank = True
            if cur is not None and cur.diagnostic:
                cur = None
            continue
        g = _GENERATED.match(line)
        if g and address(g.group(1)) and (cur is None or cur.recipient != address(g.group(1))):
            # Exim: "  pipe to |/bin/x" / "  save to /var/mail/x" then "    generated by a@b"
            prev = recs[-1] if recs and cur is recs[-1] else None
            if prev is not None and not prev.recipient:
                prev.recipient = address(g.group(1))
            else:
                cur = Rcpt(recipient=address(g.group(1)), alias=cur_para[-1] if cur_para else "")
                if cur_para and cur_para[-1] == cur.alias:
                    cur_para.pop()
                recs.append(cur)
            continue
        a = addr_line(line)
        if (
            a is not None
            and cur is not None
            and a.addr == cur.recipient
            and cur.diagnostic
            and line[:1] in (" ", "\t")
        ):
            a = None  # "    <a@b>: User unknown": the reply quoting the address, continued
        if a is not None and not (a.label == "" and a.rest == "" and _diag_context(cur_para)):
            if cur_para:
                paras.append(cur_para)
                owner.append(len(recs) - 1 if cur is not None else -1)
                cur_para = []
            cur = Rcpt(recipient=a.addr, alias=a.alias)
            if a.label in ("unknown user", "user unknown", "mailbox is full"):
                cur.diagnostic = s
            elif a.rest:
                cur.diagnostic = a.rest
            recs.append(cur)
            last_blank = False
            continue
        if cur is not None and not _BOILER.match(s):
            cur.diagnostic = (cur.diagnostic + " " + s).strip()
        elif not _BOILER.match(s):
            cur_para.append(s)
        last_blank = False
    if cur_para:
        paras.append(cur_para)
        owner.append(len(recs) - 1 if cur is not None else -1)
    del last_blank
    # recipients without explanation: the paragraph after, else the one before
    for i, r in enumerate(recs):
        if r.diagnostic:
            continue
        after = [p for p, o in zip(paras, owner, strict=True) if o == i]
        before = [p for p, o in zip(paras, owner, strict=True) if o == i - 1]
        if after:
            r.diagnostic = " ".join(after[0])
        elif before and i == 0:
            r.diagnostic = " ".join(before[-1])
    # an explanation without a reply code, and one paragraph elsewhere that has one (James'
    # "Error message below:", Mimecast's "Additional information follows"): that is the reply
    coded = [" ".join(p) for p in paras if any(_CODED.match(x) for x in p)]
    if len(coded) == 1:
        for r in recs:
            if not _ANY_CODE.search(r.diagnostic) and coded[0] not in r.diagnostic:
                r.diagnostic = (r.diagnostic + " " + coded[0]).strip()
    return _dedupe(recs)


_ANY_CODE = re.compile(r"\b[45]\d\d\b|\b[45]\.\d{1,3}\.\d{1,3}\b")
_CODED = re.compile(r"^(?:[-#*]+\s*)?(?:[45]\d\d[ -]|[45]\.\d{1,3}\.\d{1,3}\s)")


def _diag_context(para: list[str]) -> bool:
    """True when the previous line ends mid-explanation (an address inside a sentence)."""
    return bool(para) and para[-1].rstrip().endswith((",", "user", "to", "for"))


def _dedupe(recs: list[Rcpt]) -> list[Rcpt]:
    """One record per recipient (some MTAs print the report twice, in two languages)."""
    seen: dict[str, Rcpt] = {}
    out: list[Rcpt] = []
    for r in recs:
        key = r.recipient.lower()
        if key in seen:
            old = seen[key].diagnostic
            coded = re.search(r"\b[45]\d\d\b", r.diagnostic)
            old_coded = re.search(r"\b[45]\d\d\b", old)
            if (coded and not old_coded) or (
                bool(coded) == bool(old_coded) and len(r.diagnostic) > len(old)
            ):
                seen[key].diagnostic = r.diagnostic  # Exchange: the administrators' section
            continue
        seen[key] = r
        out.append(r)
    return out


# --------------------------------------------------------------------------------------
# Taking a diagnostic apart
# --------------------------------------------------------------------------------------

_COMMANDS = (
    (re.compile(r"\b(?:in\s+reply\s+to|after)\s+end\s+of\s+(?:data|message)", re.I), "end of DATA"),
    (re.compile(r"\b(?:in\s+reply\s+to|after)\s+(?:the\s+)?(?:RCPT(?:\s+TO)?)\b", re.I), "RCPT TO"),
    (re.compile(r"\b(?:in\s+reply\s+to|after)\s+(?:the\s+)?MAIL(?:\s+FROM)?\b", re.I), "MAIL FROM"),
    (re.compile(r"\b(?:in\s+reply\s+to|after)\s+(?:the\s+)?DATA\b", re.I), "DATA"),
    (re.compile(r"\b(?:in\s+reply\s+to|after)\s+(?:the\s+)?(?:EHLO|HELO|LHLO)\b", re.I), "EHLO"),
    (re.compile(r"\b(?:in\s+reply\s+to|after)\s+(?:the\s+)?STARTTLS\b", re.I), "STARTTLS"),
    (
        re.compile(
            r"\bafter\s+initial\s+connection|refused\s+to\s+talk\s+to\s+me|"
            r"greeting\s+failed",
            re.I,
        ),
        "CONNECT",
    ),
    (re.compile(r"^\s*>>>\s*(?:RCPT)", re.I | re.M), "RCPT TO"),
    # qmail-remote: "most progress was RCPT TO response"; Yahoo's bounces: "[RCPT_TO]"
    (re.compile(r"most\s+progress\s+was\s+RCPT\s+TO\b|\[RCPT_TO\]", re.I), "RCPT TO"),
    (re.compile(r"most\s+progress\s+was\s+MAIL\s+FROM\b|\[MAIL_FROM\]", re.I), "MAIL FROM"),
    (re.compile(r"but\s+sender\s+was\s+rejected", re.I), "MAIL FROM"),
    (re.compile(r"but\s+my\s+name\s+was\s+rejected", re.I), "EHLO"),
    (re.compile(r"does\s+not\s+like\s+recipient", re.I), "RCPT TO"),
    (
        re.compile(
            r"failed\s+after\s+I\s+sent\s+the\s+message|did\s+not\s+like\s+our\s+final\s+DATA", re.I
        ),
        "end of DATA",
    ),
    (
        re.compile(r"failed\s+on\s+DATA\s+command", re.I),
        "DATA",
    ),
)

_HOST_IP = re.compile(r"\bhost\s+([A-Za-z0-9][A-Za-z0-9._-]*)\s*\[([0-9A-Fa-f.:]+)\]")
_HOST_OTHER = (
    re.compile(
        r"\b([A-Za-z0-9][-A-Za-z0-9.]*\.[A-Za-z]{2,})\.?\s*\[[0-9A-Fa-f.:]+\]:?\s+"
        r"(?:did\s+not\s+like|said|refused|returned|failed\s+with)"
    ),
    re.compile(r"\bhost:\s*([A-Za-z0-9][-A-Za-z0-9.]*\.[A-Za-z]{2,})\b"),
    re.compile(r"\bRemote\s+Server\s+at\s+([A-Za-z0-9][-A-Za-z0-9.]*\.[A-Za-z]{2,})\b"),
    re.compile(r"\bServer\s+([A-Za-z0-9][-A-Za-z0-9.]*\.[A-Za-z]{2,})\[[0-9A-Fa-f.:]+\]"),
    re.compile(r"\b(?:Connected\s+to|Giving\s+up\s+on)\s+([0-9A-Za-z][-0-9A-Za-z.]*[0-9A-Za-z])"),
    re.compile(r"\bremote\s+host\s+([-0-9A-Za-z.]+[0-9A-Za-z])\s+said:"),
    re.compile(r"\bwhile\s+talking\s+to\s+\[?([-0-9A-Za-z.]+[0-9A-Za-z])\]?\.?:", re.I),
    re.compile(r"^([0-9A-Za-z][-0-9A-Za-z.]*\.[A-Za-z0-9]+)\s+\[[0-9.]+\]:\s", re.M),
    re.compile(r"^([0-9]{1,3}(?:\.[0-9]{1,3}){3})\s+does\s+not\s+like\s+recipient"),
)


@dataclass(slots=True)
class Explained:
    text: str  # the remote reply (or the reporting MTA's own words), one line
    rhost: str
    command: str
    remote: bool  # the text is the remote server's reply


def explain(diag: str) -> Explained:
    """Split a diagnostic into remote host, SMTP command and the reply text."""
    t = re.sub(r"[ \t]+", " ", diag or "").strip()
    t = re.sub(r"\s*\((?:expanded|generated)\s+from:?[^)]*\)\s*", " ", t).strip()
    t = re.sub(r"^\(reason:\s*(.*?)\)?$", r"\1", t).strip()
    rhost = ""
    m = _HOST_IP.search(t)
    if m:
        rhost = clean_host(m.group(1))
    else:
        for rx in _HOST_OTHER:
            m2 = rx.search(t)
            if m2:
                rhost = clean_host(m2.group(1))
                break
    command = ""
    for rx, name in _COMMANDS:
        if rx.search(t):
            command = name
            break
    text, remote = t, False
    cuts = (
        r"\bhost\s+\S+\s*\[[^\]]*\]\s+said:\s*",
        r"\brefused\s+to\s+talk\s+to\s+me:\s*",
        r"\bRemote\s+host\s+said:\s*",
        r"\bSMTP\s+error\s+from\s+remote\s+(?:mail\s+server|mailer)\s+after\s+[^:]*?:\s*"
        r"(?:<[^>]*>[^:]*:\s*)?(?:host\s+\S+\s*\[[^\]]*\]:?\s*)?",
        r"\bhost\s+\S+\s*\[[^\]]*\]:\s*",
        r"\bThe\s+error\s+that\s+the\s+other\s+server\s+returned\s+was:\s*",
        r"\bLMTP\s+error\s+after\s+[^:]*:\s*",
        r"\bRemote\s+Server\s+(?:at\s+\S+\s+(?:\([^)]*\)\s+)?)?returned\s*'?",
    )
    for pat in cuts:
        parts = re.split(pat, text, maxsplit=1, flags=re.I)
        if len(parts) == 2 and parts[1].strip():
            text, remote = parts[1], True
    replies = re.findall(r"<<<\s*(.*?)(?=\s*(?:<<<|>>>|$))", text)
    if replies:
        text, remote = " ".join(dict.fromkeys(r for r in replies if r)), True
    text = re.sub(r"\s*\(in\s+reply\s+to\s+[^)]*command\)\s*$", "", text, flags=re.I)
    text = re.sub(r"\s*Giving\s+up\s+on\s+\S+\s*$", "", text)
    text = re.sub(
        r"^#(?=[245]\d\d[ -])|\s*##\s*$|'\s*$", "", text.strip()
    )  # Exchange "#550 ... ##"
    return Explained(text.strip(), rhost, command, remote)


# --------------------------------------------------------------------------------------
# Addresses inside a sentence, SMTP transcripts
# --------------------------------------------------------------------------------------

_IN_SENTENCE = re.compile(
    rf"""(?:addressed\s+to|could\s+not\s+be\s+delivered\s+to:?|delivered\s+to|delivery\s+failed:|
        did\s+not\s+reach\s+the\s+following\s+recipient:|error-for:|failed\s+recipient:|
        failed\s+to\s+deliver\s+to|intended\s+recipient:|mailbox\s+is\s+full:|rcpt\s+to:|
        rejected\s+recipient|returned\s+permanent\s+errors:|the\s+following\s+message\s+to|
        unknown\s+user:|undeliverable\s+to|undeliverable\s+address:|you\s+sent\s+mail\s+to|
        your\s+message\s+to|your\s+mail\s+to|unable\s+to\s+deliver\s+(?:message\s+)?to:?|
        there\s+was\s+an\s+error\s+delivering\s+your\s+mail\s+to|recipient:|address:|to:)
        \s*["'<]?(?P<addr>{_ADDR})""",
    re.I | re.X,
)


def scan_sentences(lines: list[str]) -> list[Rcpt]:
    """Last resort for texts that name the recipient inside a sentence ("There was an error
    delivering your mail to <a@b>."): one record per address, the whole text as explanation."""
    addrs: list[str] = []
    body: list[str] = []
    for line in lines:
        s = line.strip()
        if not s:
            continue
        m = _IN_SENTENCE.search(s)
        if m and address(m.group("addr")):
            addrs.append(address(m.group("addr")))
            rest = s[m.end() :].strip(" >.:;")
            if rest:
                body.append(rest)
            continue
        if not _BOILER.match(s):
            body.append(s)
    text = " ".join(body)
    return [Rcpt(recipient=a, diagnostic=text) for a in dict.fromkeys(addrs)]


_TALKING = re.compile(r"^\s*(?:\.\.\.\s*)?while\s+talking\s+to\s+\[?([^\]\s:]+?)\]?\.?:\s*$", re.I)
_COURIER_HOST = re.compile(r"^\s*([A-Za-z0-9][-A-Za-z0-9.]*)\s+\[[0-9A-Fa-f.:]+\]:\s*$")
_SENT = re.compile(r"^\s*>>>\s*([A-Za-z]{4})\b[^<]*<?([^>\s]*)>?", re.I)
_GOT = re.compile(r"^\s*<<<\s*(.*)$")
#: Sendmail's own summary lines in the transcript: "550 5.1.1 <a@b>... User unknown"
_ERR = re.compile(r"^[45]\d\d[ -](?:[45]\.\d{1,3}\.\d{1,3}\s)?.*\S")


_SMTP_NAMES = {
    "RCPT": "RCPT TO",
    "MAIL": "MAIL FROM",
    "EHLO": "EHLO",
    "HELO": "HELO",
    "DATA": "DATA",
    "QUIT": "QUIT",
    "LHLO": "LHLO",
    "STAR": "STARTTLS",
    "AUTH": "AUTH",
}


def transcript(lines: list[str]) -> dict[str, Rcpt]:
    """An SMTP session transcript (Sendmail, Courier, ...) per recipient: the host talked to,
    the last command sent, the replies received. Key ``""`` holds replies not tied to a
    recipient (a MAIL FROM or greeting refused). A reply naming an address belongs to that
    recipient, even when it arrives after DATA (PIPELINING)."""
    out: dict[str, Rcpt] = {}
    summary: dict[str, list[str]] = {}
    host, cmd, rcpt = "", "", ""

    def entry(key: str) -> Rcpt:
        e = out.setdefault(key.lower(), Rcpt(recipient=key))
        e.rhost = e.rhost or host
        return e

    for line in lines:
        m = _TALKING.match(line) or _COURIER_HOST.match(line)
        if m:
            host, cmd, rcpt = clean_host(m.group(1)), "", ""
            continue
        m = _SENT.match(line)
        if m:
            word = m.group(1).upper()
            cmd = _SMTP_NAMES.get(word, word)
            rcpt = address(m.group(2)) if cmd == "RCPT TO" else ""
            continue
        m = _GOT.match(line)
        if m and (host or cmd):
            reply = m.group(1).strip()
            named = re.search(r"<([^<>\s]+@[^<>\s]+)>", reply)
            key, this = rcpt, cmd
            if named and cmd in ("RCPT TO", "DATA"):
                key = address(named.group(1))
                this = cmd  # the last command sent (Sisimai: a refusal after DATA)
            e = entry(key)
            e.command = this or e.command
            if reply and reply not in e.diagnostic:
                e.diagnostic = (e.diagnostic + " " + reply).strip()
            continue
        m = _ERR.match(line)
        if m:
            named = re.search(r"<([^<>\s]+@[^<>\s]+)>", line)
            key = address(named.group(1)) if named else ""
            entry(key)
            summary.setdefault(key.lower(), []).append(line.strip())
    for key, lines_ in summary.items():
        e = out[key]
        if not e.diagnostic:  # Sendmail's own summary only where no reply was quoted
            e.diagnostic = " ".join(dict.fromkeys(lines_))
    return out


def from_transcript(lines: list[str]) -> list[Rcpt]:
    """Recipients named only in a transcript (old Sendmail: ``554 <a@b>... Remote protocol
    error`` lines, no list of failed addresses). A recipient without a reply of its own gets
    the refusal of the session it belongs to (a MAIL FROM refused for the whole connection)."""
    if not any(_TALKING.match(x) or _SENT.match(x) or _GOT.match(x) for x in lines):
        return []  # no session was transcribed: error lines alone are the text's business
    ts = transcript(lines)
    session = {e.rhost: e for k, e in ts.items() if not k}
    out: list[Rcpt] = []
    for key, e in ts.items():
        if "@" not in key:
            continue
        s = session.get(e.rhost)
        if s is not None and s.diagnostic and not e.command:
            e.diagnostic = f"{s.diagnostic} {e.diagnostic}".strip()
            e.command = s.command
        out.append(e)
    return out


_SECTION_CMD = re.compile(r"^\s*-+\s*SMTP\s+command\s*-*\s*$", re.I)


def section_command(lines: list[str]) -> str:
    """The SMTP command a bounce names under a heading of its own (m-FILTER's
    ``-------SMTP command`` followed by ``DATA``), or ``""``."""
    for i, line in enumerate(lines):
        if _SECTION_CMD.match(line):
            for nxt in lines[i + 1 : i + 3]:
                word = nxt.strip().split(" ", 1)[0].upper()
                if word:
                    return _SMTP_NAMES.get(word[:4], "")
    return ""


def apply_transcript(recs: list[Rcpt], lines: list[str]) -> None:
    """Complete text records with what the session transcript says about them."""
    cmd = section_command(lines)
    for r in recs:
        r.command = r.command or cmd
    ts = transcript(lines)
    if not ts:
        return
    for r in recs:
        t = ts.get(r.recipient.lower()) or ts.get(r.alias.lower()) or ts.get("")
        if t is None and len(ts) == 1:
            t = next(iter(ts.values()))
        if t is None:
            continue
        r.rhost = r.rhost or t.rhost
        r.command = r.command or t.command
        ours = re.sub(r"\((?:expanded|generated)\s+from:?[^)]*\)", "", r.diagnostic)
        if (
            not r.diagnostic
            or len(t.diagnostic) > len(ours)
            or not re.search(r"\b[45]\d\d\b", ours)
        ):
            r.diagnostic = t.diagnostic
