"""Sources: read mail logs (files, rotated archives, journald, live follow) and bounce mail, and
turn them into the typed events of :mod:`mailwarden.events`. Nothing here classifies or stores.

Public API (everything else is internal):

* :func:`parse_lines` ``(lines: Iterable[bytes], *, env, stats, start_offset) -> Iterator[event]``:
  the hot loop, raw syslog lines -> Postfix events, counters in a :class:`ParseStats`. Works on
  any subset of lines: ``shard=(me, n)`` with the rule of :func:`shard_of` ``(raw, n)``, or
  your own with :func:`qid_of` ``(raw) -> bytes | None``.
* :func:`correlate_lines` ``(lines, ...) -> Iterator[Message | InboundReject | SaslFailure]``:
  the analyze fast path, parse and correlate in one loop (same result as
  ``Correlator.run(parse_lines(lines))``, faster).
* :func:`parse_line` ``(LogLine) -> event | Unparsed | None`` and :class:`PostfixParser` (the
  same for already split lines, e.g. from journald).
* :func:`split_line` ``(raw, env) -> LogLine | Unparsed`` with :class:`Envelope` (per-source
  state: year inference, time zone) and :class:`Stamps`; :func:`load_tz` ``(name)`` for the
  configured zone of traditional stamps; :func:`is_postfix` ``(program)``.
* :func:`parse_reply` ``(text) -> Reply`` for a status line's reason or a bare DSN diagnostic;
  :func:`split_code` ``(text) -> (code, enhanced, clean text)``.
* :class:`Correlator`: events in, :class:`~mailwarden.events.Message` out (``feed``, ``run``,
  ``flush``), bounded memory; :func:`link_bounces` for sharded runs.
* :class:`ParseStats`: total / parsed / ignored / unparsed / foreign counts and samples.
* Files: :func:`read_lines` ``(paths) -> Iterator[(LogFile, offset, raw)]`` oldest first,
  :func:`parse_files` ``(paths) -> Iterator[event]``, :func:`order_files`, :class:`LogFile`
  (plain/gzip/bzip2/xz); errors are :class:`~mailwarden.errors.SourceError` s in
  ``ParseStats.errors``, never fatal.
* Follow: :class:`Follower` ``(path, store=...)`` -> ``poll()`` / ``follow()`` :class:`Chunk` s,
  ``commit()``; :func:`follow_events` ``(follower, tz=, stop=) -> Iterator[event]``;
  :class:`CheckpointStore` protocol (``load(path)``, ``save(checkpoint)``),
  :class:`JsonCheckpointStore`, :class:`MemoryCheckpointStore`, :class:`Checkpoint`.
* Journal: :func:`parse_journal` ``(json lines) -> Iterator[event]``, :func:`record_to_logline`,
  :class:`JournalReader` (live ``journalctl -f -o json`` or python-systemd, cursor checkpoints).
"""

from __future__ import annotations

from mailwarden.sources.correlate import Correlator, correlate_lines, link_bounces
from mailwarden.sources.files import LogFile, order_files, parse_files, read_lines
from mailwarden.sources.follow import (
    Checkpoint,
    CheckpointStore,
    Chunk,
    Follower,
    JsonCheckpointStore,
    MemoryCheckpointStore,
    follow_events,
)
from mailwarden.sources.journal import JournalReader, parse_journal, record_to_logline
from mailwarden.sources.postfix import (
    PostfixParser,
    is_postfix,
    parse_line,
    parse_lines,
    qid_of,
    shard_of,
)
from mailwarden.sources.reply import parse_reply, split_code
from mailwarden.sources.stats import ParseStats
from mailwarden.sources.syslog import Envelope, Stamps, load_tz, split_line

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "Chunk",
    "Correlator",
    "Envelope",
    "Follower",
    "JournalReader",
    "JsonCheckpointStore",
    "LogFile",
    "MemoryCheckpointStore",
    "ParseStats",
    "PostfixParser",
    "Stamps",
    "correlate_lines",
    "follow_events",
    "is_postfix",
    "link_bounces",
    "load_tz",
    "order_files",
    "parse_files",
    "parse_journal",
    "parse_line",
    "parse_lines",
    "parse_reply",
    "qid_of",
    "read_lines",
    "record_to_logline",
    "shard_of",
    "split_code",
    "split_line",
]
