"""``--follow``: read a growing log file, across rotations and restarts, losing no line and
reading none twice (fail2ban's ``FileContainer`` is the model).

* **rename rotation** (``mail.log`` -> ``mail.log.1``, a new inode at the path): the old file is
  drained to its end first (and again during a short grace period, for a writer that has not
  reopened yet), then the new file is read from its start;
* **copytruncate** (same inode, the size shrinks, or the first line changes): read from 0;
* **half-written last line**: only complete lines (ending in ``\\n``) are handed out; the rest
  waits for the next poll (and is handed out as is when its file is rotated away);
* **restart**: the position is a :class:`Checkpoint` (path, inode, offset after the last line
  handed out and committed, hash of the first line). On start the follower resumes there; if
  the file was rotated while we were down, the old inode is looked for next to the path
  (``mail.log.1``...) and its rest is read before the new file.

Persistence is pluggable: anything with ``load(path)`` and ``save(checkpoint)``
(:class:`CheckpointStore`); :class:`JsonCheckpointStore` keeps them in one JSON file.

Delivery contract: :meth:`Follower.poll` returns :class:`Chunk` s of complete lines; the caller
processes them and then calls :meth:`Follower.commit`. A crash before ``commit`` replays those
lines (at least once); the store's idempotent import makes that exactly once in effect.
:func:`follow_events` does all of it and yields Postfix events::

    f = Follower("/var/log/mail.log", store=JsonCheckpointStore(state / "follow.json"))
    for ev in follow_events(f, tz=load_tz(settings.log.tz), stop=stop_event):
        handle(ev)          # the checkpoint is committed once a round's events are handled
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import IO, Protocol

from mailwarden.errors import SourceError
from mailwarden.events import PostfixEvent, Unparsed
from mailwarden.sources.postfix import PostfixParser, parse_lines
from mailwarden.sources.stats import ParseStats
from mailwarden.sources.syslog import Envelope

_CHUNK = 1 << 20
_FIRST_LINE_MAX = 8192
_HASH_EMPTY = ""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where to resume reading ``path``: after ``offset`` bytes of the file with ``inode``,
    whose first line hashes to ``first_line_hash`` (sha256 hex; "" while it has none)."""

    path: str
    inode: int
    offset: int
    first_line_hash: str
    saved_at: float = 0.0
    #: files rotated away from ``path`` but not read to their end yet, oldest first:
    #: ``(inode, offset, first_line_hash)``; they are read before the file at ``inode``.
    rotated: tuple[tuple[int, int, str], ...] = ()
    #: for the journal (``path`` "journal:"): the cursor of the last record processed
    cursor: str = ""


def checkpoint_from_dict(raw: object) -> Checkpoint | None:
    """The :class:`Checkpoint` saved as ``raw`` (its ``asdict``), or None when it is not one."""
    if not isinstance(raw, dict):
        return None
    try:
        return Checkpoint(
            path=str(raw["path"]),
            inode=int(raw["inode"]),
            offset=int(raw["offset"]),
            first_line_hash=str(raw["first_line_hash"]),
            saved_at=float(raw.get("saved_at", 0.0)),
            rotated=tuple((int(i), int(o), str(h)) for i, o, h in raw.get("rotated", ())),
            cursor=str(raw.get("cursor", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


class CheckpointStore(Protocol):
    """Persistence of follow positions, by log path."""

    def load(self, path: str) -> Checkpoint | None:
        """The last checkpoint saved for ``path``, or None."""
        ...

    def save(self, checkpoint: Checkpoint) -> None:
        """Persist ``checkpoint`` (replacing the one of the same path) durably."""
        ...


class JsonCheckpointStore:
    """Checkpoints in one JSON file (written atomically: temp file, fsync, rename)."""

    def __init__(self, file: str | os.PathLike[str]) -> None:
        self.file = Path(file)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise SourceError(f"unreadable checkpoint file: {exc}", source=str(self.file)) from exc
        return data if isinstance(data, dict) else {}

    def load(self, path: str) -> Checkpoint | None:
        with self._lock:
            raw = self._read().get(path)
        return checkpoint_from_dict(raw)

    def save(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            data = self._read()
            data[checkpoint.path] = asdict(checkpoint)
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=self.file.name + ".")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, indent=1, sort_keys=True)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.file)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


class MemoryCheckpointStore:
    """Checkpoints in a dict (tests, one-shot runs)."""

    def __init__(self) -> None:
        self.data: dict[str, Checkpoint] = {}

    def load(self, path: str) -> Checkpoint | None:
        return self.data.get(path)

    def save(self, checkpoint: Checkpoint) -> None:
        self.data[checkpoint.path] = checkpoint


@dataclass(slots=True)
class Chunk:
    """Complete lines read from one file, starting at byte ``offset`` of it."""

    path: str
    inode: int
    offset: int
    lines: list[bytes] = field(default_factory=list)


def first_line_hash(fh: IO[bytes]) -> str:
    """sha256 of the file's first complete line ("" when it has none yet). Keeps position."""
    pos = fh.tell()
    try:
        fh.seek(0)
        line = fh.readline(_FIRST_LINE_MAX)
    finally:
        fh.seek(pos)
    if not line.endswith(b"\n") and len(line) < _FIRST_LINE_MAX:
        return _HASH_EMPTY
    return hashlib.sha256(line).hexdigest()


class _Open:
    """One open file being read: its handle, identity and reading position."""

    __slots__ = ("fh", "hash", "inode", "offset", "pending", "retired_at")

    def __init__(self, fh: IO[bytes], inode: int, offset: int) -> None:
        self.fh = fh
        self.inode = inode
        self.offset = offset  # end of the last complete line handed out (or to hand out)
        self.pending = b""  # bytes after offset that do not end in a newline yet
        self.hash = first_line_hash(fh)
        self.retired_at: float | None = None

    def read_lines(self, path: str) -> Chunk | None:
        """Complete lines appended since the last call."""
        self.fh.seek(self.offset + len(self.pending))
        data = self.fh.read(_CHUNK)
        if not data:
            return None
        buf = self.pending + data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            self.pending = buf
            return None
        chunk = Chunk(path, self.inode, self.offset, io.BytesIO(buf[:cut]).readlines())
        self.offset += cut
        self.pending = buf[cut:]
        if not self.hash:
            self.hash = first_line_hash(self.fh)
        return chunk

    def take_pending(self, path: str) -> Chunk | None:
        """Hand out the unterminated rest (the file will not grow any more)."""
        if not self.pending:
            return None
        chunk = Chunk(path, self.inode, self.offset, [self.pending])
        self.offset += len(self.pending)
        self.pending = b""
        return chunk


class Follower:
    """Follow one log path. Poll with :meth:`poll`, or iterate :meth:`follow`.

    ``from_start``: with no checkpoint, read the existing content (else start at its end).
    ``grace``: seconds a rotated-away file is still drained (writers reopen late).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        store: CheckpointStore | None = None,
        from_start: bool = False,
        grace: float = 5.0,
        interval: float = 0.25,
    ) -> None:
        self.path = str(path)
        self.store: CheckpointStore = store if store is not None else MemoryCheckpointStore()
        self.from_start = from_start
        self.grace = grace
        self.interval = interval
        self._cur: _Open | None = None
        self._old: list[tuple[str, _Open]] = []  # rotated-away files still drained
        self.rotations = 0
        self.truncations = 0
        self.gaps: list[str] = []  # what could not be resumed (e.g. rotated file gone)
        self._started = False

    # -- opening ------------------------------------------------------------------------
    def _open(self, path: str) -> tuple[IO[bytes], os.stat_result] | None:
        try:
            fh = open(path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceError(exc.strerror or str(exc), source=path) from exc
        return fh, os.fstat(fh.fileno())

    def _find_inode(self, inode: int) -> str | None:
        """A file next to the path with this inode (the rotated old log), if any."""
        d = os.path.dirname(self.path) or "."
        base = os.path.basename(self.path)
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return None
        for name in names:
            if name != base and name.startswith(base):
                p = os.path.join(d, name)
                with contextlib.suppress(OSError):
                    if os.stat(p).st_ino == inode:
                        return p
        return None

    def _start(self) -> None:
        self._started = True
        cp = self.store.load(self.path)
        opened = self._open(self.path)
        cur: _Open | None = None
        if opened is not None:
            fh, st = opened
            cur = _Open(fh, st.st_ino, 0)
        if cp is None:
            if cur is not None and not self.from_start:
                cur.offset = self._end_of_last_line(cur.fh)
            self._cur = cur
            return
        # resume every file of the checkpoint, oldest first
        for inode, offset, fhash in (*cp.rotated, (cp.inode, cp.offset, cp.first_line_hash)):
            if cur is not None and inode == cur.inode:
                size = os.fstat(cur.fh.fileno()).st_size
                if (cur.hash and fhash and fhash != cur.hash) or offset > size:
                    self.truncations += 1  # copytruncate while we were stopped
                else:
                    cur.offset = offset
                continue
            old = self._find_inode(inode)
            if old is None:
                self.gaps.append(
                    f"{self.path}: rotated while stopped and inode {inode} is gone; "
                    "its unread rest is lost"
                )
                continue
            opened_old = self._open(old)
            if opened_old is None:
                continue
            o = _Open(opened_old[0], inode, 0)
            if not fhash or fhash == o.hash:
                o.offset = min(offset, opened_old[1].st_size)
            o.retired_at = time.monotonic()
            self._old.append((old, o))
        self._cur = cur

    @staticmethod
    def _end_of_last_line(fh: IO[bytes]) -> int:
        """Offset just after the last newline (a partial last line will be read later)."""
        size = os.fstat(fh.fileno()).st_size
        pos = size
        while pos > 0:
            step = min(_FIRST_LINE_MAX, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                return pos - step + nl + 1
            pos -= step
        return 0

    # -- one round ------------------------------------------------------------------------
    def poll(self) -> list[Chunk]:
        """Read what is new: complete lines, oldest file first. Never blocks."""
        if not self._started:
            self._start()
        out: list[Chunk] = []
        now = time.monotonic()
        # 1. files rotated away: drain, and let them go after the grace period
        keep: list[tuple[str, _Open]] = []
        for path, o in self._old:
            while (c := o.read_lines(path)) is not None:
                out.append(c)
            if o.retired_at is not None and now - o.retired_at >= self.grace:
                c = o.take_pending(path)
                if c is not None:
                    out.append(c)
                o.fh.close()
            else:
                keep.append((path, o))
        self._old = keep
        # 2. the path itself: rotated? truncated?
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        cur = self._cur
        if st is not None and (cur is None or st.st_ino != cur.inode):
            if cur is not None:  # rename rotation: drain the old one, keep it for a while
                while (c := cur.read_lines(self.path)) is not None:
                    out.append(c)
                cur.retired_at = now
                self._old.append((self._rotated_name(cur.inode), cur))
                self.rotations += 1
            opened = self._open(self.path)
            if opened is not None:
                fh, st2 = opened
                cur = self._cur = _Open(fh, st2.st_ino, 0)
        elif (
            cur is not None
            and st is not None
            and (
                st.st_size < cur.offset + len(cur.pending)
                or (cur.hash and first_line_hash(cur.fh) != cur.hash)
            )
        ):
            self.truncations += 1  # copytruncate (or rewritten in place)
            cur.offset = 0
            cur.pending = b""
            cur.hash = first_line_hash(cur.fh)
        if cur is not None:
            while (c := cur.read_lines(self.path)) is not None:
                out.append(c)
        return out

    def _rotated_name(self, inode: int) -> str:
        return self._find_inode(inode) or self.path

    def checkpoint(self) -> Checkpoint | None:
        """The position after everything handed out so far (None before a file was opened).

        Files rotated away but still drained are part of it, so that a restart reads their
        rest first, then resumes the current file where it was."""
        rotated = tuple((o.inode, o.offset, o.hash) for _p, o in self._old)
        cur = self._cur
        if cur is None:
            if not rotated:
                return None
            *rest, (inode, offset, fhash) = rotated
            return Checkpoint(self.path, inode, offset, fhash, time.time(), tuple(rest))
        return Checkpoint(self.path, cur.inode, cur.offset, cur.hash, time.time(), rotated)

    def commit(self) -> None:
        """Persist the checkpoint: call after the lines handed out were processed."""
        cp = self.checkpoint()
        if cp is not None:
            self.store.save(cp)

    def follow(self, stop: threading.Event | None = None) -> Iterator[Chunk]:
        """Yield chunks as the file grows, until ``stop`` is set. Commits the checkpoint when
        the consumer asks for more after a round (so consumed lines are never replayed)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            chunks = self.poll()
            if chunks:
                yield from chunks
                self.commit()
            else:
                stop.wait(self.interval)

    def close(self) -> None:
        """Close every file (no commit)."""
        for _p, o in self._old:
            o.fh.close()
        self._old = []
        if self._cur is not None:
            self._cur.fh.close()
            self._cur = None


def follow_events(
    follower: Follower,
    *,
    tz: tzinfo | None = None,
    stats: ParseStats | None = None,
    parser: PostfixParser | None = None,
    stop: threading.Event | None = None,
    yield_unparsed: bool = False,
) -> Iterator[PostfixEvent | Unparsed]:
    """Postfix events of a followed log, live. Each file (path, inode) keeps its own envelope
    state; offsets of unparsed samples are exact. The checkpoint is committed after every
    round whose events were all consumed."""
    if stats is None:
        stats = ParseStats()
    if parser is None:
        parser = PostfixParser()
    envs: dict[tuple[str, int], Envelope] = {}
    for chunk in follower.follow(stop):
        key = (chunk.path, chunk.inode)
        env = envs.get(key)
        if env is None:
            if len(envs) > 16:
                envs.clear()
            env = envs[key] = Envelope(tz=tz, source=chunk.path)
        yield from parse_lines(
            chunk.lines,
            env=env,
            stats=stats,
            parser=parser,
            start_offset=chunk.offset,
            yield_unparsed=yield_unparsed,
        )
