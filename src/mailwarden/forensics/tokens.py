"""Tokenizer for Received header values: words, ``;`` and (nested) parenthesised comments.

RFC 5321 section 4.4 and RFC 5322 section 3.6.7 build a Received value from clauses
(``from``, ``by``, ``via``, ``with``, ``id``, ``for``) whose arguments may be followed by
comments in parentheses, and end with ``; date-time``. Everything that tells one MTA's layout
from another's lives in *where* a word sits relative to those comments, so the parser works on
this token tree, never on the flat string.

Hostile input is expected: the value is cut to :data:`MAX_LEN` characters, control characters
become spaces, comments nest at most :data:`MAX_DEPTH` levels (deeper ones are kept as raw
text), and an unbalanced parenthesis is an ordinary character (``via smap (V1.3 id x; date``
still has an ``id`` and a date). Tokenizing is linear in the length of the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

MAX_LEN = 16_384
MAX_DEPTH = 24

_CTRL = re.compile(r"[\x00-\x1f\x7f]+")

TokKind = Literal["word", "comment", "semi"]


@dataclass(slots=True)
class Tok:
    """One token. For a comment, ``text`` is the inner text and ``children`` its tokens."""

    kind: TokKind
    text: str
    glued: bool = False  # no whitespace between this token and the previous one
    children: list[Tok] = field(default_factory=list)

    def words(self) -> list[str]:
        """The word tokens directly inside this comment (nested comments left out)."""
        return [c.text for c in self.children if c.kind == "word"]

    def comments(self) -> list[Tok]:
        return [c for c in self.children if c.kind == "comment"]


def clean(value: str) -> str:
    """Cut to :data:`MAX_LEN`, turn control characters (NUL, CR, LF, tabs) into one space."""
    if len(value) > MAX_LEN:
        value = value[:MAX_LEN]
    return _CTRL.sub(" ", value).strip()


def _match_parens(s: str) -> dict[int, int]:
    """Map each balanced ``(`` position to its ``)``; backslash escapes the next character."""
    stack: list[int] = []
    match: dict[int, int] = {}
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            stack.append(i)
        elif c == ")" and stack:
            match[stack.pop()] = i
        i += 1
    return match


def tokenize(value: str) -> list[Tok]:
    """Tokenize an (already :func:`clean`-ed) Received value into a comment tree."""
    match = _match_parens(value)
    return _tokenize(value, 0, len(value), match, 0)


def _tokenize(s: str, i: int, end: int, match: dict[int, int], depth: int) -> list[Tok]:
    out: list[Tok] = []
    glued = False
    while i < end:
        c = s[i]
        if c.isspace():
            glued = False
            i += 1
            continue
        if c == "(" and i in match and match[i] < end:
            close = match[i]
            children = _tokenize(s, i + 1, close, match, depth + 1) if depth < MAX_DEPTH else []
            out.append(Tok("comment", s[i + 1 : close], glued and bool(out), children))
            i = close + 1
            glued = True
            continue
        if c == ";":
            out.append(Tok("semi", ";", glued and bool(out)))
            i += 1
            glued = True
            continue
        if c == ")":  # a closing parenthesis without its opening one: ignore it
            i += 1
            continue
        j = i
        while j < end:
            d = s[j]
            if d.isspace() or d == ";" or (d == "(" and j in match) or d == ")":
                break
            if d == "\\" and j + 1 < end:
                j += 1
            j += 1
        out.append(Tok("word", s[i:j], glued and bool(out)))
        glued = True
        i = j
    return out


def flat_words(toks: list[Tok]) -> list[str]:
    """Every word in ``toks``, comments included, in order (used for the date and evidence)."""
    out: list[str] = []
    stack = list(reversed(toks))
    while stack:
        t = stack.pop()
        if t.kind == "word":
            out.append(t.text)
        elif t.kind == "comment":
            stack.extend(reversed(t.children))
    return out


def iter_comments(toks: list[Tok]) -> list[Tok]:
    """Every comment in ``toks`` at any depth, outermost first."""
    out: list[Tok] = []
    stack = [t for t in reversed(toks) if t.kind == "comment"]
    while stack:
        t = stack.pop()
        out.append(t)
        stack.extend(c for c in reversed(t.children) if c.kind == "comment")
    return out
