"""Sources: read mail logs (files, rotated archives, journald, live follow) and bounce mail, and
turn them into the typed events of :mod:`mailwarden.events`. Nothing here classifies or stores.

Public API (everything else is internal):

* :func:`parse_lines` ``(lines: Iterable[bytes], *, env, stats, start_offset) -> Iterator[event]``:
  the hot loop, raw syslog lines -> Postfix events, counters in a :class:`ParseStats`. Works on
  any subset of lines (shard with :func:`qid_of` ``(raw) -> bytes | None``).
* :func:`parse_line` ``(LogLine) -> event | Unparsed | None`` and :class:`PostfixParser` (the
  same for already split lines, e.g. from journald).
* :func:`split_line` ``(raw, env) -> LogLine | Unparsed`` with :class:`Envelope` (per-source
  state: year inference, time zone) and :class:`Stamps`.
* :func:`parse_reply` ``(text) -> Reply`` for a status line's reason or a bare DSN diagnostic.
* :class:`Correlator`: events in, :class:`~mailwarden.events.Message` out (``feed``, ``run``,
  ``flush``), bounded memory; :func:`link_bounces` for sharded runs.
* :class:`ParseStats`: total / parsed / ignored / unparsed / foreign counts and samples.
* Files, journald and follow: :mod:`mailwarden.sources.files` (:func:`read_lines`,
  :func:`order_files`), :mod:`mailwarden.sources.journal`, :mod:`mailwarden.sources.follow`.
"""

from __future__ import annotations

from mailwarden.sources.correlate import Correlator, link_bounces
from mailwarden.sources.postfix import (
    PostfixParser,
    is_postfix,
    parse_line,
    parse_lines,
    qid_of,
)
from mailwarden.sources.reply import parse_reply, split_code
from mailwarden.sources.stats import ParseStats
from mailwarden.sources.syslog import Envelope, Stamps, load_tz, split_line

__all__ = [
    "Correlator",
    "Envelope",
    "ParseStats",
    "PostfixParser",
    "Stamps",
    "is_postfix",
    "link_bounces",
    "load_tz",
    "parse_line",
    "parse_lines",
    "parse_reply",
    "qid_of",
    "split_code",
    "split_line",
]
