"""Received header parser: one header value in, one :class:`Hop` out.

Grammar first (RFC 5321 section 4.4)::

    from HELO-NAME (RDNS [IP])  by RECEIVER  via LINK  with PROTOCOL  id ID  for <RCPT> ; DATE

The name outside the parentheses is what the client said in HELO/EHLO; the receiver writes
the reverse DNS it found *inside* the parentheses, beside the address. ``from X ([IP])`` thus
means "no reverse DNS recorded", whoever X claims to be. MTAs that write something else are
recognised by the *shape* of the from-clause (the token tree of :mod:`.tokens`), not by
per-sample patterns:

* an explicit HELO marker (``helo=x`` Exim/Momentum, ``(HELO x)``/``(EHLO x)`` qmail,
  IronPort, CommuniGate, GMX, Yahoo, ``(LHLO x)`` Zimbra, ``claiming to be "x"`` Obtuse)
  means the name outside is the receiver's own name for the peer, i.e. its reverse DNS;
* a bare, unbracketed address in the comment (``(1.2.3.4)``, ``(user@1.2.3.4)``) is qmail's
  ``from RDNS (IP)`` layout, where HELO is only written when it differs, except for
  Microsoft Exchange, which writes ``from HELO (IP)`` and records no reverse DNS at all;
* a comment glued to the name (``host(1.2.3.4)``, no space: TIS smap, Obtuse smtpd) is
  ``RDNS(IP)`` with no HELO;
* ``([IP] verified)`` (CommuniGate) and an Exim receiver's ``from NAME ([IP])`` mean the name
  was verified as the peer's reverse DNS (and matched its HELO);
* an address outside every comment (``from A (B) [IP]`` Exim 3, GMX) is ``RDNS (HELO) [IP]``.

Anything without a from-clause, without a connecting address (``from X by Y``), or that is a
mail retrieval (POP3/IMAP, fetchmail) is not a relay hop (``parsed=False``, with ``why``).
A reverse DNS name must look like a host name (``unknown``, ``softdnserr``, bare addresses are
"none recorded"). Addresses are normalised: ``IPv6:`` prefixes, ports (``:25``, Exim 3's
``.25``), zone ids and IPv4-mapped IPv6 (``::ffff:1.2.3.4`` -> ``1.2.3.4``) are removed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_tz
from functools import lru_cache

from mailwarden.forensics.tokens import Tok, clean, flat_words, iter_comments, tokenize

# --------------------------------------------------------------------------------------------
# Result records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS details as the receiver recorded them (``""`` when not said)."""

    version: str = ""  # "TLSv1.3", "TLS1_2", "TLS1.2"
    cipher: str = ""  # "TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"
    bits: str = ""  # "256"

    def __bool__(self) -> bool:
        return bool(self.version or self.cipher or self.bits)


@dataclass(frozen=True, slots=True)
class Hop:
    """One Received header, parsed. Text fields are ``""`` when the header does not say."""

    raw: str
    parsed: bool  # True: a relay hop with a connecting address
    why: str = ""  # parsed=False: why this is not a relay hop
    helo: str = ""  # HELO/EHLO argument, verbatim ("[192.0.2.1]" for an address literal)
    rdns: str = ""  # reverse DNS the receiver recorded for ``ip``
    rdns_status: str = ""  # "recorded", "unknown" (looked up, none), "failed", "not recorded"
    ip: str = ""  # connecting address, normalised
    port: int | None = None
    ident: str = ""  # RFC 1413 ident / user part the receiver recorded
    by: str = ""  # receiving host
    via: str = ""
    with_: str = ""  # the with-clause as written ("ESMTPSA", "Microsoft SMTP Server", "esmtp")
    protocol: str = ""  # its first word, upper-case ("ESMTPSA", "SMTP", "LMTP", "HTTP")
    id: str = ""
    for_: str = ""
    envfrom: str = ""
    auth: str = ""  # evidence of authenticated submission (label; "" = none shown)
    tls: Tls = field(default_factory=Tls)
    date: str = ""  # ISO 8601 with the header's UTC offset
    ts: float | None = None  # POSIX seconds
    date_raw: str = ""
    mta: str = ""  # receiving software, when the header names it ("Postfix", "Exim", ...)
    flags: tuple[str, ...] = ()  # "may-be-forged", "verified", "unverified", "webmail", ...


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

#: A from-clause longer than this is garbage after that point (real ones have < 10 tokens).
_MAX_FROM_TOKENS = 32
_KEYWORDS = frozenset({"from", "by", "via", "with", "id", "for"})
_HELO_WORDS = frozenset({"helo", "ehlo", "lhlo"})
#: Protocols that fetch mail from a mailbox: the "from" host did not relay anything to "by".
_RETRIEVAL = frozenset({"POP", "POP3", "POP3S", "IMAP", "IMAP4", "IMAPS", "IMAP4REV1", "ODMR"})
_RETRIEVAL_TOOLS = re.compile(r"\b(?:fetchmail|getmail|mpop|offlineimap|mbsync)\b", re.I)
#: Words a receiver writes in the rDNS slot when it found none.
_NO_RDNS = frozenset({"unknown", "unverified", "softdnserr", "softdnsfail", "[unknown]"})
_HOST_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_EXIM3_IP = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})\.(\d{1,5})$")
_V4_PORT = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):(\d{1,5})$")
_PORT_SUFFIX = re.compile(r"^(\[[^\]]*\])[:.](\d{1,5})$")
_DATE_RE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s+)?\d{1,2}\s+[A-Za-z]{3}[a-z]*\s+\d{2,4}\s+"
    r"\d{1,2}:\d{2}(?::\d{2})?(?:\s+(?:[+-]\d{4}|[A-Z]{1,5}))?"
)
_ASCTIME_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+[A-Za-z]{3}\s+\d{1,2}\s+\d{1,2}:\d{2}:\d{2}\s+\d{4}"
)
_SENDMAIL_VER = re.compile(r"^\d+\.\d+\.\d+(?:\.\d+)?/")
_TLS_POSTFIX = re.compile(
    r"using\s+(\S+)\s+with\s+cipher\s+(\S+)(?:\s+\((\d+)/\d+\s+bits\))?", re.I
)
_TLS_KV = re.compile(r"\b(version|cipher|bits)=([^\s,;)]+)", re.I)
_TLS_COLON = re.compile(r"^((?:TLS|SSL)[\w.-]*):([\w-]+):(\d+)(?::\w+)*$", re.I)
_TLS_COURIER = re.compile(r"TLS:\s*([\w./-]+),(\d+)bits,([\w-]+)", re.I)
_ENCRYPTED = re.compile(r"^([\w-]+)\s+encrypted$", re.I)

#: (pattern on the by-clause comments / with-clause, name). First match names the receiver.
_MTA_SIGNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bPostfix\b", re.I), "Postfix"),
    (re.compile(r"\bExim\b", re.I), "Exim"),
    (
        re.compile(r"\bMicrosoft SMTP Server\b|\bSMTPSVC\b|\bmapi\b|Microsoft Exchange", re.I),
        "Microsoft Exchange",
    ),
    (re.compile(r"\bqmail\b|^qp \d+$", re.I), "qmail"),
    (re.compile(r"CommuniGate", re.I), "CommuniGate Pro"),
    (re.compile(r"Messaging Server|iPlanet|Sun Java", re.I), "Sun/iPlanet Messaging Server"),
    (re.compile(r"\bMDaemon\b", re.I), "MDaemon"),
    (re.compile(r"\becelerity\b|\bMomentum\b", re.I), "Momentum"),
    (re.compile(r"\bamavisd?\b", re.I), "amavis"),
    (re.compile(r"\bCourier\b", re.I), "Courier"),
    (re.compile(r"\bXMail\b", re.I), "XMail"),
    (re.compile(r"\bZimbra\b", re.I), "Zimbra"),
    (re.compile(r"\bSendmail\b", re.I), "Sendmail"),
    (re.compile(r"\bLotus Domino\b", re.I), "Lotus Domino"),
    (re.compile(r"\bMercury\b", re.I), "Mercury"),
    (re.compile(r"\bKerio\b", re.I), "Kerio Connect"),
    (re.compile(r"\bHermes\b", re.I), "Yahoo Hermes"),
)
#: By-clause marks of a content filter (the hop hands the message to/from a scanner).
_FILTER_SIGNS = re.compile(
    r"amavis|spamassassin|mailscanner|qmail-scanner|clamsmtp|spampd|-scanned|scanner|"
    r"dspam|mimedefang|\bspamd\b",
    re.I,
)

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _strip(word: str) -> str:
    """Remove separators and quotes around a word (``"x",`` -> ``x``)."""
    return word.strip(",;\"'")


def _addr(word: str) -> str:
    """``<<a@b>>,`` -> ``a@b``."""
    return _strip(word).strip("<>").strip(",;")


def host_name(word: str) -> str:
    """``word`` as a host name (trailing dot removed) if it looks like one, else ``""``.

    ``localhost`` counts; addresses, ``unknown`` and single labels do not.
    """
    w = _strip(word).rstrip(".")
    if w.lower() == "localhost":
        return w
    if not _HOST_RE.match(w) or parse_ip(w)[0]:
        return ""
    if w.rsplit(".", 1)[-1].isdigit():  # 1.2.3.4.5 and the like are not names
        return ""
    return w


@lru_cache(maxsize=16384)
def parse_ip(word: str) -> tuple[str, str, int | None, bool]:
    """Find an address in one word: ``(ip, ident, port, bracketed)`` or ``("", "", None, False)``.

    Accepts ``1.2.3.4``, ``[1.2.3.4]``, ``[1.2.3.4]:25``, ``[1.2.3.4.25]`` (Exim 3),
    ``[1.2.3.4:25]``, ``1.2.3.4:25``, ``[IPv6:2001:db8::1]``, ``2001:db8::1``, ``fe80::1%7``,
    ``[::ffff:1.2.3.4]`` (becomes ``1.2.3.4``), with an optional ``user@`` (ident) in front.
    """
    w = _strip(word)
    if len(w) > 300 or not any(ch.isdigit() for ch in w):
        return "", "", None, False
    ident = ""
    if "@" in w:
        left, _, right = w.rpartition("@")
        w, ident = right, left
        if ident.upper().startswith("IDENT:"):
            ident = ident[6:]
    port: int | None = None
    bracketed = False
    m = _PORT_SUFFIX.match(w)
    if m:
        w, port = m.group(1), int(m.group(2))
    if w.startswith("[") and w.endswith("]") and len(w) > 2:
        w = w[1:-1]
        bracketed = True
    elif w.startswith("[") or w.endswith("]"):
        return "", "", None, False
    if w[:5].lower() == "ipv6:":
        w = w[5:]
    for rx in (_EXIM3_IP, _V4_PORT):
        m = rx.match(w)
        if m and (bracketed or rx is _V4_PORT):
            w, port = m.group(1), int(m.group(2))
            break
    w = w.split("%", 1)[0]
    if not w or len(w) > 45 or not (w[0].isalnum() or w[0] == ":"):
        return "", "", None, False
    try:
        ip = ipaddress.ip_address(w)
    except ValueError:
        return "", "", None, False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), ident, port, bracketed


def parse_date(text: str) -> tuple[str, float | None]:
    """RFC 5322 date (or asctime) -> (ISO 8601 with offset, POSIX seconds); ("", None) if none."""
    text = text.strip()
    if not text:
        return "", None
    cand = [text]
    for rx in (_DATE_RE, _ASCTIME_RE):
        m = rx.search(text)
        if m:
            cand.append(m.group(0))
    for c in cand:
        try:
            t = parsedate_tz(c)
        except (ValueError, IndexError, TypeError, OverflowError):
            t = None
        if t is None:
            continue
        y, mo, d, h, mi, s = t[:6]
        if y < 100:  # RFC 5322 4.3: two-digit years
            y += 2000 if y < 50 else 1900
        off = t[9] or 0
        try:
            if not (1970 <= y <= 2200) or abs(off) >= 86400:
                raise ValueError
            tz = timezone(timedelta(seconds=off))
            dt = datetime(y, mo, d, h, mi, min(s, 59), tzinfo=tz)
        except (ValueError, OverflowError):
            continue
        return dt.isoformat(), dt.astimezone(UTC).timestamp()
    return "", None


def _mta(texts: list[str]) -> str:
    for t in texts:
        if _SENDMAIL_VER.match(t):
            return "Sendmail"
        for rx, name in _MTA_SIGNS:
            if rx.search(t):
                return name
    return ""


def _tls(comments: list[Tok], with_words: list[str], protocol: str) -> Tls:
    version = cipher = bits = ""
    for c in comments:
        t = " ".join(c.text.split())
        m = _TLS_POSTFIX.search(t)
        if m:
            return Tls(m.group(1), m.group(2), m.group(3) or "")
        kv = {k.lower(): v for k, v in _TLS_KV.findall(t)}
        if "cipher" in kv or ("version" in kv and kv["version"].upper().startswith(("TLS", "SSL"))):
            b = kv.get("bits", "").split("/")[0]
            return Tls(kv.get("version", ""), kv.get("cipher", ""), b)
        m = _TLS_COLON.match(t)
        if m:
            return Tls(m.group(1), m.group(2), m.group(3))
        m = _TLS_COURIER.search(t)
        if m:
            return Tls(m.group(1), m.group(3), m.group(2))
        m = _ENCRYPTED.match(t)
        if m:
            cipher = m.group(1)
        if re.fullmatch(r"(?:TLS|SSL)v?[\d._]+", t, re.I):
            version = t
    low = [w.lower() for w in with_words]
    if "tls" in low:  # Exim 4.9x: "with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384"
        i = low.index("tls")
        if i + 1 < len(with_words):
            cipher = cipher or with_words[i + 1]
    return Tls(version, cipher, bits)


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Clauses:
    frm: list[Tok] = field(default_factory=list)
    has_from: bool = False
    by: list[Tok] = field(default_factory=list)
    via: list[Tok] = field(default_factory=list)
    with_: list[Tok] = field(default_factory=list)
    id: list[Tok] = field(default_factory=list)
    for_: list[Tok] = field(default_factory=list)
    from2: list[Tok] = field(default_factory=list)  # XMail: "... for <rcpt> from <sender>"
    seen: set[str] = field(default_factory=set)


def _split_date(toks: list[Tok]) -> tuple[list[Tok], list[Tok]]:
    """Split at the last top-level ``;`` whose remainder holds a date (else the last ``;``)."""
    semis = [i for i, t in enumerate(toks) if t.kind == "semi"]
    for i in reversed(semis[-4:]):  # a date is at the end: never rescan the whole value
        if parse_date(" ".join(w for w in flat_words(toks[i + 1 :])))[1] is not None:
            return toks[:i], toks[i + 1 :]
    if semis:
        return toks[: semis[-1]], toks[semis[-1] + 1 :]
    return toks, []


def _clauses(toks: list[Tok]) -> _Clauses:
    c = _Clauses()
    cur: list[Tok] | None = None
    first = True
    for t in toks:
        if t.kind == "semi":
            continue
        kw = t.text.lower() if t.kind == "word" else ""
        if first:
            first = False
            if kw == "from":
                c.has_from = True
                cur = c.frm
                c.seen.add("from")
                continue
        if kw in _KEYWORDS and not (cur is c.frm and not c.frm):
            if kw == "from" and "from" in c.seen:
                cur = c.from2 if not c.from2 else None
            elif kw in c.seen:
                cur = None  # a second "by uid 502" and the like: ignored
            else:
                c.seen.add(kw)
                cur = getattr(c, {"with": "with_", "for": "for_", "from": "from2"}.get(kw, kw))
            continue
        if cur is not None:
            cur.append(t)
    return c


def _first_word(toks: list[Tok]) -> str:
    for t in toks:
        if t.kind == "word":
            return _strip(t.text)
        return ""
    return ""


@dataclass(slots=True)
class _Markers:
    helo: str | None = None  # None: no explicit HELO marker; "" an explicit empty one
    ident: str = ""
    port: int | None = None
    auth: str = ""
    envfrom: str = ""
    flags: list[str] = field(default_factory=list)


def _scan_markers(words: list[str], mk: _Markers) -> list[int]:
    """Consume marker words of one comment; return the indexes of the words left over."""
    left: list[int] = []
    i, n = 0, len(words)
    while i < n:
        w = words[i]
        lw = w.lower()
        if lw.startswith("helo="):
            if mk.helo is None:
                mk.helo = _strip(w[5:])
        elif lw in _HELO_WORDS:
            nxt = words[i + 1] if i + 1 < n else ""
            if mk.helo is None:
                mk.helo = _strip(nxt)
            i += 2
            continue
        elif lw.startswith("ident="):
            mk.ident = mk.ident or _strip(w[6:])
        elif lw.startswith("port="):
            p = _strip(w[5:])
            mk.port = int(p) if p.isdigit() and len(p) < 6 else mk.port
        elif lw == "auth:" and i + 1 < n:  # Courier: (AUTH: LOGIN user, TLS: ...)
            mk.auth = mk.auth or _strip(words[i + 1])
            i += 3
            continue
        elif lw == "account" and i + 1 < n:  # CommuniGate: (account user HELO x)
            mk.auth = mk.auth or "Communigate"
            i += 2
            continue
        elif lw == "authenticated" and i + 1 < n and words[i + 1].lower() == "sender:":
            mk.auth = mk.auth or "authenticated-sender"
            i += 3
            continue
        elif lw == "authenticated":
            nxt = words[i + 1].lower() if i + 1 < n else ""
            if nxt.startswith("bits=") or not nxt:
                mk.auth = mk.auth or "Sendmail"
            elif nxt == "as":
                mk.auth = mk.auth or "CriticalPath"
                i += 3
                continue
            elif nxt == "user":
                mk.auth = mk.auth or "authenticated"
                i += 3
                continue
            else:
                mk.auth = mk.auth or "authenticated"
        elif lw.startswith(("envelope-from", "envelope-sender")):
            val = w.split("=", 1)[1] if "=" in w else (words[i + 1] if i + 1 < n else "")
            mk.envfrom = mk.envfrom or _addr(val)
            i += 1 if "=" in w else 2
            continue
        elif lw in ("verified", "unverified"):
            mk.flags.append(lw)
        else:
            left.append(i)
        i += 1
    return left


def parse_received(value: str) -> Hop:
    """Parse one Received header value (``Received:`` prefix and folding allowed)."""
    text = clean(value)
    if text[:9].lower() == "received:":
        text = text[9:].lstrip()
    raw = text
    toks = tokenize(text)
    body, tail = _split_date(toks)
    date_words = [w for t in tail if t.kind == "word" for w in [t.text]]
    date, ts = parse_date(" ".join(date_words))
    if ts is None and not tail:
        m = _DATE_RE.search(text) or _ASCTIME_RE.search(text)
        if m:
            date, ts = parse_date(m.group(0))
    date_raw = " ".join(date_words)

    c = _clauses(body)
    by = _first_word(c.by)
    via = " ".join(_strip(t.text) for t in c.via if t.kind == "word")
    with_words = [t.text for t in c.with_ if t.kind == "word"]
    with_ = " ".join(with_words).strip(",; ")
    protocol = _strip(with_words[0]).upper() if with_words else ""
    ident_ = _addr(_first_word(c.id)) if c.id else ""
    if not ident_:
        # Courier writes "...; Fri, 14 Nov 2003 08:05:50 +0000 id 0002843F.3FB48A3E.000", TIS
        # smap "via smap (V1.3 id xma093673)": an "id X" pair in the date part or a comment
        for words in ([t.text for t in tail if t.kind == "word"], flat_words(body)):
            for k, w in enumerate(words[:-1]):
                if w.lower() == "id" and len(_addr(words[k + 1])) >= 3:
                    ident_ = _addr(words[k + 1])
                    break
            if ident_:
                break
    for_ = _addr(_first_word(c.for_)) if c.for_ else ""

    by_comments = [t for t in c.by if t.kind == "comment"]
    with_comments = [t for t in c.with_ if t.kind == "comment"]
    sign_texts = [t.text for t in iter_comments(c.by + c.with_ + c.via)] + [with_, via]
    mta = _mta(sign_texts)
    all_comments = iter_comments(toks)
    tls = _tls(all_comments, with_words, protocol)

    # envelope sender: any "(envelope-from x)" / "envelope-sender <x>", or XMail's "from <x>"
    mk = _Markers()
    for cm in all_comments:
        low = cm.text.lower()
        if "envelope-from" in low or "envelope-sender" in low:
            _scan_markers(cm.words(), mk)
    envfrom = mk.envfrom
    if not envfrom and c.from2:
        envfrom = _addr(_first_word(c.from2))
    if not envfrom:  # Haraka: "... id X envelope-from <a@b> ..." outside any comment
        words = [t.text for t in toks if t.kind == "word"]
        for k, w in enumerate(words[:-1]):
            if w.lower() in ("envelope-from", "envelope-sender"):
                envfrom = _addr(words[k + 1])
                break

    base = Hop(
        raw=raw,
        parsed=False,
        by=by,
        via=via,
        with_=with_,
        protocol=protocol,
        id=ident_,
        for_=for_,
        envfrom=envfrom,
        tls=tls,
        date=date,
        ts=ts,
        date_raw=date_raw,
        mta=mta,
    )
    if not c.has_from:
        return replace(base, why="no from clause (a local note, not a relay hop)")
    if protocol in _RETRIEVAL or _RETRIEVAL_TOOLS.search(with_ + " " + " ".join(sign_texts)):
        return replace(base, why="mail retrieval (POP/IMAP), not an SMTP relay")

    # ---- the from-clause --------------------------------------------------------------------
    frm = c.frm
    name = ""
    rest = frm
    if frm and frm[0].kind == "word":
        name = _strip(frm[0].text)
        rest = frm[1:]
    mk = _Markers(envfrom=envfrom)
    tcp_ip = tcp_ident = rdns_word = ""
    tcp_port: int | None = None
    tcp_bare = tcp_glued = False
    top_ip = ""
    top_port: int | None = None
    helo_comment = ""  # Exim 3 "from A (B) [ip]": B
    first_comment = True
    rest_words = [t.text for t in rest if t.kind == "word"]
    # Obtuse smtpd: 'claiming to be "helo"' outside the comments
    low_rest = [w.lower() for w in rest_words]
    for i in range(len(low_rest) - 3):
        if low_rest[i : i + 3] == ["claiming", "to", "be"]:
            mk.helo = _strip(rest_words[i + 3])
            break
    for t in rest[:_MAX_FROM_TOKENS]:
        if t.kind == "word":
            if not top_ip:
                ip, _, port, _ = parse_ip(t.text)
                if ip:
                    top_ip, top_port = ip, port
            continue
        if t.kind != "comment":
            continue
        words = t.words()
        left = _scan_markers(words, mk)
        for nested in t.comments():
            nl = nested.text.lower()
            if "forged" in nl:
                mk.flags.append("may-be-forged")
            _scan_markers(nested.words(), mk)
        if not tcp_ip:
            for k in left:
                ip, idt, port, br = parse_ip(words[k])
                if not ip:
                    continue
                tcp_ip, tcp_ident, tcp_port, tcp_bare = ip, idt, port, not br
                tcp_glued = t.glued and bool(name)
                pos = left.index(k)
                if pos > 0 and left[pos - 1] == k - 1:
                    rdns_word = words[k - 1]
                    if "@" in rdns_word:  # Sendmail "(user@host [ip])"
                        user, _, rdns_word = rdns_word.rpartition("@")
                        tcp_ident = tcp_ident or user.removeprefix("IDENT:")
                break
        if first_comment and not tcp_ip and len(left) == 1 and len(words) == 1:
            helo_comment = _strip(words[0])
        first_comment = False
    flags = list(dict.fromkeys(mk.flags))

    name_ip, _, name_port, _ = parse_ip(name) if name else ("", "", None, False)
    via_proto = _strip(via.split()[0]).upper() if via else ""
    webmail = (
        protocol.startswith("HTTP")
        or via_proto.startswith("HTTP")
        or "webmail" in (with_ + via).lower()
    )
    ip = tcp_ip or top_ip or name_ip
    if not ip:
        why = "no connecting address recorded (from X by Y)"
        if _FILTER_SIGNS.search(with_ + " " + " ".join(sign_texts)):
            why = "content-scanner hop, no connecting address"
        elif webmail:
            why = "webmail submission, no connecting address"
        return replace(base, why=why, helo=name)

    # ---- who is who: HELO, reverse DNS ------------------------------------------------------
    name_host = host_name(name)
    microsoft = mta == "Microsoft Exchange"
    rdns = ""
    status = "not recorded"
    helo = mk.helo
    if tcp_ip and rdns_word:
        rdns = host_name(rdns_word)
        low = _strip(rdns_word).lower()
        status = (
            "recorded" if rdns else ("unknown" if low in ("unknown", "[unknown]") else "failed")
        )
        if helo is None:
            helo = name
    elif tcp_ip:
        if helo is not None or tcp_glued:
            rdns = name_host
        elif (
            "verified" in mk.flags  # CommuniGate: the name was verified as the peer's rDNS
            or (tcp_bare and not microsoft and not webmail)  # qmail: from RDNS (IP)
            or (mta == "Exim" and bool(name_host))  # Exim: from RDNS ([IP]), HELO matched it
        ):
            rdns = name_host
            helo = name
        else:
            helo = name
        if name.lower() == "unknown":
            status = "unknown"
    elif top_ip:
        if helo is not None or helo_comment:  # "from RDNS (HELO) [IP]": Exim 3, GMX
            rdns = name_host
            helo = helo if helo is not None else helo_comment
        else:  # "from NAME [IP]": the name is what the client said
            helo = name
    elif helo is None:
        # "from [IP] by Y": the receiver wrote only the peer's address, no HELO; a name that
        # is not an address is the HELO (RFC 5321), except over HTTP where there is none
        helo = "" if (webmail or name_ip) else name
    if rdns:
        status = "recorded"
    if tcp_glued and helo is None:
        helo = ""
    if webmail:
        flags.append("webmail")
    if "may-be-forged" in flags and rdns:
        status = "recorded"
    if by_comments and _FILTER_SIGNS.search(" ".join(t.text for t in by_comments + with_comments)):
        flags.append("content-filter")

    # ---- authentication evidence --------------------------------------------------------------
    # The MTA's own mark first (it says more: the SASL method, the account), then webmail, then
    # the RFC 3848 protocol keyword (ESMTPA, ESMTPSA, LMTPA, ...).
    marks = [mk.auth]
    for cm in by_comments + with_comments:
        scan = _Markers()
        _scan_markers(cm.words(), scan)
        marks.append(scan.auth)
    mark = next((m for m in marks if m), "")
    auth = ""
    if webmail and mark in ("", "authenticated"):
        auth = (
            _strip(with_words[0]) if protocol.startswith("HTTP") else (via.split() or ["HTTP"])[0]
        )
    elif mark == "authenticated-sender":
        auth = "Postfix" if mta == "Postfix" else "authenticated"
    elif mark:
        auth = mark
    elif by.lower().startswith("mail.gmx.") and mk.helo is not None and top_ip:
        auth = f"GMX ({protocol} / {by})"
    elif re.fullmatch(r"(?:E|UTF8)?(?:SMTP|LMTP)S?A", protocol):
        auth = _strip(with_words[0])
    if "HTTP-DAV" in with_:
        auth = "HTTP-DAV"

    return replace(
        base,
        parsed=True,
        helo=helo or "",
        rdns=rdns,
        rdns_status=status,
        ip=ip,
        port=tcp_port if tcp_ip else (top_port if top_ip else name_port) or mk.port,
        ident=mk.ident or tcp_ident,
        auth=auth,
        flags=tuple(dict.fromkeys(flags)),
    )
