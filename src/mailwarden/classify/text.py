"""Reply text helpers: split a raw reply into code/enhanced/text, fold it for matching, normalise
it for the cache, and pull out the IP and URL a receiver cites.

Patterns in the tables are matched against :func:`normalise` output: lower case, one space
between words, multi-line prefixes (``550-5.7.1``) removed, IPv4 addresses written ``0.0.0.0``,
IPv6 ``0::0``, e-mail local parts ``x``, free-standing numbers of six or more digits ``0`` and
long machine ids (10+ letters and digits, at least three digits) ``#``. Replies that differ only
in those parts share one cache entry.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

_CODE_HEAD = re.compile(
    r"""^\s*
    (?:(?P<code>[245]\d\d)(?:-|\s+|:\s*|$))?                          # "550 " "550-" "501: "
    (?:\#?(?P<enh>[245]\.\d{1,3}\.\d{1,3})(?:\s+|$|[:;,]\s*|(?=[<\[(])))?  # "5.7.1 " "#5.1.0 "
    """,
    re.X,
)
_WRAPPER = re.compile(
    r"^\s*(?:host\s+\S+\s+(?:said|refused to talk to me):\s*|remote protocol error:\s*)",
    re.I,
)
_IPV4 = r"(?<![\w.])(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}(?![\w.]*\w)"
_IPV6 = (
    r"(?<![\w:.])(?=[0-9a-f:]*:[0-9a-f]*:)(?:[0-9a-f]{0,4}:){2,7}"
    r"(?:[0-9a-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)
_IPV4_RE = re.compile(_IPV4)
_LOCAL_CH = r"[\w.+=!#$%&'*/?^`{|}~-]"
_EMAIL_LOCAL = re.compile(rf"(?<!{_LOCAL_CH}){_LOCAL_CH}{{1,64}}@(?=[a-z0-9-]{{1,63}}\.)", re.I)
_LONGNUM = re.compile(r"(?<![\w.])\d{6,}(?![\w])")
_LONGID = re.compile(r"(?<![a-z0-9])(?=[a-z]*\d)[a-z0-9]{10,}(?![a-z0-9])")
_ISOTIME = re.compile(r"\d{4}-\d\d-\d\dt\d\d:\d\d:\d\d(?:\.\d+)?z?")


#: Replies longer than this are cut before matching (an SMTP reply line is at most 512 octets;
#: multi-line replies a few KiB). Bounds the cost of every pattern on hostile input.
MAX_TEXT = 4096


def split_reply(raw: str) -> tuple[int | None, str, str]:
    """``"550 5.7.1 text"`` -> ``(550, "5.7.1", "text")``; tolerant of missing parts.

    Also drops Postfix's ``host X said:`` wrapper and a repeated code (``554 554 5.7.1``).
    """
    s = _WRAPPER.sub("", raw[:MAX_TEXT], count=1)
    code: int | None = None
    enh = ""
    for _ in range(3):  # "554 554 5.7.1 ..." and "550 5.7.1 ..." alike
        m = _CODE_HEAD.match(s)
        if not m or not (m.group("code") or m.group("enh")):
            break
        if m.group("code"):
            if code is not None and int(m.group("code")) != code:
                break
            code = int(m.group("code"))
        if m.group("enh"):
            enh = enh or m.group("enh")
        s = s[m.end() :]
    return code, enh, s.strip()


@lru_cache(maxsize=1024)
def _prefix_re(code: int, enhanced: str) -> re.Pattern[str]:
    e = re.escape(enhanced) if enhanced else r"[245]\.\d{1,3}\.\d{1,3}"
    return re.compile(rf"(?:(?<=\s)|^){code}(?:-|[ ](?:{e}(?:\s|$))?)(?:{e}(?:\s|$))?")


_HASH_STATUS = re.compile(r"[(\[]#([245]\.\d{1,3}\.\d{1,3})[)\]]")


def hash_status(text: str) -> str:
    """The enhanced code qmail and Exchange put at the end of their texts (``(#5.1.1)``,
    ``[#4.1.9]``), or ``""``."""
    if "#" not in text:
        return ""
    m = _HASH_STATUS.search(text[:MAX_TEXT])
    return m.group(1) if m else ""


_IN_REPLY = re.compile(r"\(in reply to (?P<cmd>[a-z][a-z -]{1,20}?) command\)", re.I)
_COMMANDS = {
    "mail from": "MAIL FROM",
    "rcpt to": "RCPT TO",
    "data": "DATA",
    "end of data": "end of DATA",
    "ehlo": "EHLO",
    "helo": "HELO",
    "lhlo": "LHLO",
    "starttls": "STARTTLS",
    "auth": "AUTH",
    "quit": "QUIT",
    "rset": "RSET",
}


def command_of(text: str) -> str:
    """The SMTP stage named by Postfix's ``(in reply to RCPT TO command)`` note, or ``""``."""
    if "in reply to" not in text:
        return ""
    m = _IN_REPLY.search(text[:MAX_TEXT])
    return _COMMANDS.get(m.group("cmd").lower(), "") if m else ""


def fold(text: str, code: int | None = None, enhanced: str = "") -> str:
    """Lower-case, one line, inline multi-line prefixes of this reply's code removed."""
    t = text[:MAX_TEXT]
    if code is not None and str(code) in t:
        t = _prefix_re(code, enhanced).sub(" ", t)
    return " ".join(t.split()).lower()


_NORM = re.compile(
    rf"(?P<t>{_ISOTIME.pattern})|(?P<v6>{_IPV6})|(?P<v4>{_IPV4})|(?P<em>{_EMAIL_LOCAL.pattern})"
    rf"|(?P<n>{_LONGNUM.pattern})|(?P<id>{_LONGID.pattern})",
    re.I,
)


def _norm_one(m: re.Match[str]) -> str:
    kind = m.lastgroup
    s = m.group(0)
    if kind == "v4":
        return "0.0.0.0"
    if kind == "id":
        digits = sum(map(str.isdigit, s))
        return "#" if 3 <= digits < len(s) else s
    if kind == "em":
        return "x@"
    if kind == "n":
        return "0"
    if kind == "v6":
        return _v6(m)
    return "#"


# A "word" (no spaces or brackets) that holds a digit or an "@": only those can change. Atomic
# scanning (possessive quantifiers, Python 3.11) keeps this linear on hostile input.
_WORD_CH = r"[^\s\[\]()<>,;\"']"
_CANDIDATE = re.compile(rf"(?<!{_WORD_CH})(?=[^\s\[\]()<>,;\"'\d@]*+[\d@]){_WORD_CH}++")


def _norm_word(m: re.Match[str]) -> str:
    return _NORM.sub(_norm_one, m.group(0))


def normalise(folded: str) -> str:
    """Replace the parts of a folded reply that vary per message (see the module docstring)."""
    return _CANDIDATE.sub(_norm_word, folded)


def _v6(m: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(m.group(0))
    except ValueError:
        return m.group(0)
    return "0::0"


# ---------------------------------------------------------------------------------------------
# What the receiver cites
# ---------------------------------------------------------------------------------------------

_URL = re.compile(r"(?:https?://|(?<![\w@/.-])www\.)[^\s<>\"'\]\[|]+", re.I)
_CITE_BEFORE = re.compile(
    r"(?:[?&](?:ip|ipr|i|q|search|searchterm|query|value)="
    r"|\bip(?:\s*address)?\s*[=:]?\s*\[?|\bfrom\s+\[?|\bclient\s+host\s+\[?"
    r"|\bhost\s+\[|\bsender\s+\[?|\bserver\s+\[?|\[)$",
    re.I,
)
_ANY_IP = re.compile(rf"{_IPV4}|{_IPV6}", re.I)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return ""


def cited_ip(text: str, *, exclude: str = "") -> str:
    """The IP address a reply cites, preferring one in a lookup URL, after ``IP``/``from``/
    ``client host`` or in brackets, else the first address in the text. ``exclude`` (the
    receiver's own address) is never returned."""
    best: tuple[int, int, str] | None = None
    t = text[:MAX_TEXT]
    rx = _ANY_IP if "::" in t or t.count(":") >= 3 else _IPV4_RE
    for m in rx.finditer(t):
        ip = _ip(m.group(0))
        if not ip or ip == exclude:
            continue
        rank = 0 if _CITE_BEFORE.search(text[max(0, m.start() - 24) : m.start()]) else 1
        cand = (rank, m.start(), ip)
        if best is None or cand < best:
            best = cand
    return best[2] if best else ""


def urls(text: str) -> list[str]:
    """Every URL in the text, trailing punctuation removed, ``www.`` ones given a scheme."""
    out = []
    for m in _URL.finditer(text[:MAX_TEXT]):
        u = m.group(0).rstrip(".,;:)>}")
        if u.lower().startswith("www."):
            u = "http://" + u
        out.append(u)
    return out
