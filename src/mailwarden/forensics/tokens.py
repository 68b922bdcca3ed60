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


_PARENS = re.compile(r"\\.|[()]", re.S)
_TOKEN = re.compile(r"(\s+)|(;)|(\()|(\))|((?:\\.|[^\s;()\\])+|\\)", re.S)


def _match_parens(s: str) -> dict[int, int]:
    """Map each balanced ``(`` position to its ``)``; backslash escapes the next character."""
    stack: list[int] = []
    match: dict[int, int] = {}
    for m in _PARENS.finditer(s):
        c = m.group()
        if c == "(":
            stack.append(m.start())
        elif c == ")" and stack:
            match[stack.pop()] = m.start()
    return match


def tokenize(value: str) -> list[Tok]:
    """Tokenize an (already :func:`clean`-ed) Received value into a comment tree."""
    match = _match_parens(value)
    closes = {v: k for k, v in match.items()}
    top: list[Tok] = []
    cur = top
    stack: list[tuple[list[Tok], Tok]] = []  # (parent list, open comment)
    skipped: list[int] = []  # depth past MAX_DEPTH: these opens are plain text
    glued = False
    pending = ""  # an unbalanced "(" glued to the next word
    for m in _TOKEN.finditer(value):
        ws, semi, op, cl, word = m.groups()
        pos = m.start()
        if ws is not None:
            glued = False
            if pending:
                cur.append(Tok("word", pending, False))
                pending = ""
            continue
        if op is not None:
            if pos in match and len(stack) < MAX_DEPTH:
                if pending:
                    cur.append(Tok("word", pending, glued and bool(cur)))
                    pending = ""
                tok = Tok("comment", value[pos + 1 : match[pos]], glued and bool(cur))
                cur.append(tok)
                stack.append((cur, tok))
                cur = tok.children
                glued = False
            elif pos in match:
                skipped.append(match[pos])
                pending += "("
            else:
                pending += "("
            continue
        if cl is not None:
            if pos in closes and skipped and skipped[-1] == pos:
                skipped.pop()
                pending += ")"
            elif pos in closes and stack:
                if pending:
                    cur.append(Tok("word", pending, glued and bool(cur)))
                    pending = ""
                cur = stack.pop()[0]
                glued = True
            continue  # a ")" without its "(": ignored
        if semi is not None:
            if pending:
                cur.append(Tok("word", pending, glued and bool(cur)))
                pending = ""
            cur.append(Tok("semi", ";", glued and bool(cur)))
            glued = True
            continue
        text = pending + word if pending else word
        cur.append(Tok("word", text, glued and bool(cur)))
        pending = ""
        glued = True
    if pending:
        cur.append(Tok("word", pending, glued and bool(cur)))
    return top


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
