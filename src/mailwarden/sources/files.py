"""Log files on disk: plain, gzip, bzip2 and xz (found by their magic bytes, not their name),
several rotated files read oldest first, byte offsets tracked, damaged archives reported.

Rotated sets come in any order (``mail.log mail.log.1 mail.log.2.gz`` or dated names): they
are ordered by the time stamp of their first line (year inferred from each file's mtime), then
by mtime, never by name. A file that cannot be read, or an archive that is corrupt or cut
short, gives a :class:`~mailwarden.errors.SourceError` naming the file and the (decompressed)
offset where reading stopped; the lines before it are kept and the other files go on.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import IO

from mailwarden.errors import SourceError
from mailwarden.events import PostfixEvent, Unparsed
from mailwarden.sources.postfix import PostfixParser, parse_lines
from mailwarden.sources.stats import ParseStats
from mailwarden.sources.syslog import Envelope

_READ_BUFFER = 1 << 20
_TAIL_PROBE = 64 * 1024
_TRAD_STAMP = re.compile(rb"[A-Z][a-z]{2} [ 0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] ")
#: How far into a file to look for its first readable time stamp.
_PROBE_LINES = 200

_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)

ErrorHandler = Callable[[SourceError], None]


def compression_of(head: bytes) -> str:
    """``"gzip"``, ``"bzip2"``, ``"xz"`` or ``"plain"`` from the first bytes of a file."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return "plain"


@dataclass(frozen=True, slots=True)
class LogFile:
    """One log file: where it is, how it is compressed, and its identity when it was listed."""

    path: Path
    compression: str
    mtime: float
    size: int
    inode: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> LogFile:
        """Stat and sniff ``path``; raises :class:`SourceError` if it cannot be opened."""
        p = Path(path)
        try:
            with p.open("rb") as fh:
                head = fh.read(6)
                st = os.fstat(fh.fileno())
        except OSError as exc:
            raise SourceError(exc.strerror or str(exc), source=str(p)) from exc
        return cls(p, compression_of(head), st.st_mtime, st.st_size, st.st_ino)

    def open(self) -> IO[bytes]:
        """Open for binary reading, decompressing on the fly."""
        raw = open(self.path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 (returned)
        if self.compression == "gzip":
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        if self.compression == "bzip2":
            return bz2.BZ2File(raw, "rb")
        if self.compression == "xz":
            return lzma.LZMAFile(raw, "rb")
        return raw

    def envelope(self, tz: tzinfo | None = None) -> Envelope:
        """The syslog envelope state for this file: the year of traditional stamps is inferred
        from its mtime and, for a plain file, from its last stamp too (exact for spans up to
        a year)."""
        last = self.last_stamp() if self.compression == "plain" else None
        return Envelope(tz=tz, reference=self.mtime, source=str(self.path), last=last)

    def last_stamp(self) -> bytes | None:
        """The traditional stamp (``b"Nov 27 17:19:54"``) of the last line that has one, read
        from the end of a plain file; None if there is none near the end."""
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - _TAIL_PROBE))
                tail = fh.read(_TAIL_PROBE)
        except OSError:
            return None
        for line in reversed(tail.split(b"\n")[1 if size > _TAIL_PROBE else 0 :]):
            if _TRAD_STAMP.match(line):
                return line[:15]
        return None

    def lines(self, on_error: ErrorHandler | None = None, start: int = 0) -> Iterator[bytes]:
        """The raw lines (with their ``\\n``). Stops at a read or decompression error, which is
        passed to ``on_error`` (raised when there is none) naming the file and offset."""
        offset = 0
        try:
            with self.open() as fh:
                if start:
                    if self.compression == "plain":
                        fh.seek(start)
                    else:
                        _skip(fh, start)
                    offset = start
                for raw in fh:
                    offset += len(raw)
                    yield raw
        except _DECOMPRESS_ERRORS as exc:
            what = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            kind = "" if self.compression == "plain" else f"{self.compression} "
            err = SourceError(f"{kind}read error: {what}", source=str(self.path), offset=offset)
            if on_error is None:
                raise err from exc
            on_error(err)

    def first_ts(self, tz: tzinfo | None = None) -> float | None:
        """Time stamp of the first line that has a readable one (None if none near the top)."""
        env = self.envelope(tz)
        errors: list[SourceError] = []
        for i, raw in enumerate(self.lines(errors.append)):
            if i >= _PROBE_LINES:
                break
            out = env.split(raw)
            if not isinstance(out, str):
                return out[0]
        return None


def _skip(fh: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = fh.read(min(n, _READ_BUFFER))
        if not chunk:
            break
        n -= len(chunk)


def order_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    tz: tzinfo | None = None,
    on_error: ErrorHandler | None = None,
) -> list[LogFile]:
    """Stat, sniff and order files oldest first (first time stamp, then mtime, then name).

    Files that cannot be opened are reported to ``on_error`` (raised when there is none) and
    left out; the same file named twice is read once.
    """
    keyed: list[tuple[float, float, str, LogFile]] = []
    seen: set[tuple[int, int]] = set()
    for p in paths:
        try:
            lf = LogFile.of(p)
        except SourceError as err:
            if on_error is None:
                raise
            on_error(err)
            continue
        ident = (os.stat(lf.path).st_dev, lf.inode)
        if ident in seen:
            continue
        seen.add(ident)
        first = lf.first_ts(tz)
        keyed.append((lf.mtime if first is None else first, lf.mtime, str(lf.path), lf))
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


def _record(stats: ParseStats | None, on_error: ErrorHandler | None) -> ErrorHandler:
    def handle(err: SourceError) -> None:
        if stats is not None:
            stats.error(str(err))
        if on_error is not None:
            on_error(err)

    return handle


def read_lines(
    paths: Iterable[str | os.PathLike[str]],
    *,
    tz: tzinfo | None = None,
    stats: ParseStats | None = None,
    on_error: ErrorHandler | None = None,
) -> Iterator[tuple[LogFile, int, bytes]]:
    """``(file, offset, raw line)`` of every file, oldest file first.

    Errors (unreadable file, corrupt archive) go to ``stats.errors`` and ``on_error``; reading
    continues with the next file.
    """
    handle = _record(stats, on_error)
    for lf in order_files(paths, tz=tz, on_error=handle):
        offset = 0
        for raw in lf.lines(handle):
            yield lf, offset, raw
            offset += len(raw)


def parse_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    tz: tzinfo | None = None,
    stats: ParseStats | None = None,
    parser: PostfixParser | None = None,
    on_error: ErrorHandler | None = None,
    yield_unparsed: bool = False,
) -> Iterator[PostfixEvent | Unparsed]:
    """Postfix events of several (rotated, compressed) files, oldest first, in one stream.

    Each file gets its own envelope (year inferred from its mtime) and exact byte offsets.
    """
    if stats is None:
        stats = ParseStats()
    if parser is None:
        parser = PostfixParser()
    handle = _record(stats, on_error)
    for lf in order_files(paths, tz=tz, on_error=handle):
        yield from parse_lines(
            lf.lines(handle),
            env=lf.envelope(tz),
            stats=stats,
            parser=parser,
            start_offset=0,
            yield_unparsed=yield_unparsed,
        )
