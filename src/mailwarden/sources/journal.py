"""systemd journal: ``journalctl -o json`` records -> :class:`~mailwarden.events.LogLine` and
Postfix events; live reading through ``journalctl -f -o json`` (or python-systemd when it is
importable), resuming from a saved cursor.

One JSON object per line, as journalctl writes them. Fields used: ``__REALTIME_TIMESTAMP``
(microseconds since the epoch, as a string), ``_HOSTNAME``, ``SYSLOG_IDENTIFIER`` (``_COMM`` as
a fallback), ``SYSLOG_PID`` / ``_PID``, ``MESSAGE`` and ``__CURSOR``. journalctl writes a
``MESSAGE`` that is not valid UTF-8 as an array of byte values, a field that occurs several
times as an array of values, and a field larger than its size limit (4096 bytes unless
``--all``) as ``null``; all three are handled. A record that cannot be read is an
:class:`~mailwarden.events.Unparsed`, counted in :class:`ParseStats`, never an exception.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mailwarden.errors import SourceError
from mailwarden.events import LogLine, PostfixEvent, Unparsed
from mailwarden.sources.follow import Checkpoint, CheckpointStore, MemoryCheckpointStore
from mailwarden.sources.postfix import IGNORED, PostfixParser
from mailwarden.sources.stats import ParseStats

SOURCE = "journal"
CHECKPOINT_KEY = "journal:"  # the checkpoint "path" of the journal (cursor in ``cursor``)


def _field(rec: dict[str, Any], name: str) -> Any:
    v = rec.get(name)
    if isinstance(v, list) and v and not isinstance(v[0], int):
        return v[0]  # the field occurred several times
    return v


def _text(v: Any) -> bytes | None:
    """A journal field value as bytes: string, array of byte values, or None."""
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if isinstance(v, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in v):
        return bytes(v)
    return None


def _pid(rec: dict[str, Any]) -> int | None:
    for name in ("SYSLOG_PID", "_PID"):
        v = _field(rec, name)
        if isinstance(v, str) and v.isdigit() and len(v) <= 10:
            return int(v)
    return None


def split_record(line: bytes | str) -> tuple[float, str, str, int | None, bytes, str] | str:
    """One ``journalctl -o json`` line -> ``(ts, host, program, pid, message, cursor)``, or the
    reason it cannot be read."""
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "not json"
    if not isinstance(rec, dict):
        return "not a journal record"
    stamp = _field(rec, "__REALTIME_TIMESTAMP")
    if not isinstance(stamp, str) or not stamp.isdigit() or len(stamp) > 19:
        return "bad timestamp"
    msg = _text(_field(rec, "MESSAGE"))
    if msg is None:
        return "message too large or missing" if "MESSAGE" in rec else "no message"
    prog_b = _text(_field(rec, "SYSLOG_IDENTIFIER")) or _text(_field(rec, "_COMM")) or b""
    host_b = _text(_field(rec, "_HOSTNAME")) or b""
    cursor = _field(rec, "__CURSOR")
    return (
        int(stamp) / 1e6,
        host_b.decode("utf-8", "replace"),
        prog_b.decode("utf-8", "replace"),
        _pid(rec),
        msg.rstrip(b"\n"),
        cursor if isinstance(cursor, str) else "",
    )


def record_to_logline(line: bytes | str, *, offset: int = -1) -> LogLine | Unparsed:
    """One ``journalctl -o json`` line -> :class:`LogLine` (``source="journal"``)."""
    out = split_record(line)
    if isinstance(out, str):
        text = line if isinstance(line, str) else line.decode("utf-8", "replace")
        return Unparsed(SOURCE, offset, text[:2000].rstrip("\r\n"), out)
    ts, host, program, pid, msg, _cursor = out
    return LogLine(ts, host, program, pid, msg.decode("utf-8", "replace"), SOURCE, offset)


def parse_journal(
    lines: Iterable[bytes | str],
    *,
    stats: ParseStats | None = None,
    parser: PostfixParser | None = None,
    yield_unparsed: bool = False,
    cursor: list[str] | None = None,
) -> Iterator[PostfixEvent | Unparsed]:
    """``journalctl -o json`` lines -> Postfix events (counters in ``stats``).

    When ``cursor`` is a list, ``cursor[0]`` is kept at the cursor of the last record read,
    for checkpoints."""
    if stats is None:
        stats = ParseStats()
    if parser is None:
        parser = PostfixParser()
    for n, line in enumerate(lines):
        stats.total += 1
        out = split_record(line)
        if isinstance(out, str):
            u = stats.unparsed_line(SOURCE, n, line, out)
            if yield_unparsed:
                yield u
            continue
        ts, host, program, _pid, msg, cur = out
        if cursor is not None and cur:
            if cursor:
                cursor[0] = cur
            else:
                cursor.append(cur)
        if not parser.program(program)[1]:
            stats.foreign += 1
            stats.program(program)
            continue
        ev = parser.message(ts, host, program, msg)
        if isinstance(ev, str):
            if ev == IGNORED:
                stats.ignored += 1
                continue
            u = stats.unparsed_line(SOURCE, n, msg, ev)
            if yield_unparsed:
                yield u
            continue
        stats.parsed += 1
        yield ev


class JournalReader:
    """Live journal records (JSON lines), resuming after the last committed cursor.

    Uses python-systemd's ``systemd.journal.Reader`` when importable (``prefer_native``), else a
    ``journalctl -f -o json --all`` subprocess (``journalctl`` names the program, for tests).
    Call :meth:`commit` after processing what :meth:`records` yielded.
    """

    def __init__(
        self,
        *,
        store: CheckpointStore | None = None,
        journalctl: str | Sequence[str] = "journalctl",
        prefer_native: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.store: CheckpointStore = store if store is not None else MemoryCheckpointStore()
        self.journalctl = [journalctl] if isinstance(journalctl, str) else list(journalctl)
        self.prefer_native = prefer_native
        self.extra_args = list(extra_args)
        self.cursor = ""
        cp = self.store.load(CHECKPOINT_KEY)
        if cp is not None:
            self.cursor = cp.cursor
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The journalctl command line that is run."""
        cmd = [*self.journalctl, "--follow", "--output=json", "--all", "--no-pager"]
        # --follow alone shows the last 10 records: after a cursor, every one (--no-tail),
        # else none of the past (--lines=0; --no-tail would cancel it)
        cmd += [f"--after-cursor={self.cursor}", "--no-tail"] if self.cursor else ["--lines=0"]
        return cmd + self.extra_args

    def records(self, stop: threading.Event | None = None) -> Iterator[bytes]:
        """Journal records as JSON lines until ``stop`` is set (or the journal source ends)."""
        if self.prefer_native:
            native = self._native(stop)
            if native is not None:
                yield from native
                return
        exe = shutil.which(self.journalctl[0])
        if exe is None:
            raise SourceError("journalctl not found (no systemd journal here)", source=SOURCE)
        self._proc = subprocess.Popen(
            [exe, *self.command()[1:]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        proc = self._proc
        assert proc.stdout is not None
        watcher: threading.Thread | None = None
        if stop is not None:

            def _stopper() -> None:
                stop.wait()
                if proc.poll() is None:
                    proc.terminate()

            watcher = threading.Thread(target=_stopper, daemon=True)
            watcher.start()
        try:
            yield from proc.stdout
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._proc = None

    def _native(self, stop: threading.Event | None) -> Iterator[bytes] | None:
        try:
            from systemd import journal  # type: ignore[import-not-found]
        except ImportError:
            return None

        def gen() -> Iterator[bytes]:
            r = journal.Reader()
            if self.cursor:
                r.seek_cursor(self.cursor)
                r.get_next()
            else:
                r.seek_tail()
                r.get_previous()
            while stop is None or not stop.is_set():
                e = r.get_next()
                if not e:
                    r.wait(0.5)
                    continue
                rec = {
                    "__REALTIME_TIMESTAMP": str(int(e["__REALTIME_TIMESTAMP"].timestamp() * 1e6)),
                    "_HOSTNAME": e.get("_HOSTNAME", ""),
                    "SYSLOG_IDENTIFIER": e.get("SYSLOG_IDENTIFIER", ""),
                    "SYSLOG_PID": str(e.get("SYSLOG_PID", e.get("_PID", ""))),
                    "MESSAGE": e.get("MESSAGE", ""),
                    "__CURSOR": e.get("__CURSOR", ""),
                }
                if isinstance(rec["MESSAGE"], bytes):
                    rec["MESSAGE"] = list(rec["MESSAGE"])
                yield json.dumps(rec).encode()

        return gen()

    def events(
        self,
        *,
        stats: ParseStats | None = None,
        parser: PostfixParser | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[PostfixEvent | Unparsed]:
        """Postfix events of the live journal; the cursor follows what was yielded."""
        holder: list[str] = []
        for ev in parse_journal(self.records(stop), stats=stats, parser=parser, cursor=holder):
            if holder:
                self.cursor = holder[0]
            yield ev
        if holder:
            self.cursor = holder[0]

    def commit(self) -> None:
        """Save the cursor of the last record read."""
        if self.cursor:
            self.store.save(Checkpoint(CHECKPOINT_KEY, 0, 0, "", cursor=self.cursor))

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
