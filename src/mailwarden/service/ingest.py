"""Live ingestion of the mail log into the store, exactly once across crashes.

Two parts, each a supervised component of the daemon:

* :class:`LogIngest` follows the log files (:class:`~mailwarden.sources.Follower`) or the
  journal, parses, hands every delivery attempt to the breaker at once, and folds messages into
  store rows with the same code as ``mailwarden analyze`` (:class:`mailwarden.pipeline.Folder`).
  Every ``[service] commit_interval`` it closes a :class:`Unit`: the rows, the SASL failures,
  the follow positions *and* the correlator's open messages (:mod:`.snapshot`). Open messages
  that already have delivery attempts (or are queued) are written as they are, so deferrals are
  in the store while they happen; the store's idempotent writer adds only what is new when the
  same message is written again.
* :class:`StoreWriter` writes units in order, each in one transaction together with its
  checkpoints. When the store is unreachable (PostgreSQL restarting) it retries the same units
  with backoff; the reader keeps reading until ``[service] queue_units`` units wait, then waits
  too. Nothing is acknowledged before it is committed, so a daemon killed at any moment resumes
  from the last committed checkpoint and its snapshot: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mailwarden.events import Delivery, MxReply, SaslFailure, Unparsed
from mailwarden.sources.follow import (
    Checkpoint,
    Follower,
    MemoryCheckpointStore,
    checkpoint_from_dict,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from mailwarden.classify.engine import Classifier
    from mailwarden.events import PostfixEvent
    from mailwarden.store.rows import Batch

log = logging.getLogger("mailwarden.service.ingest")

#: Checkpoint row holding the correlator snapshot (one per host).
CORRELATOR_SOURCE = "#correlator"


@dataclass(slots=True)
class Unit:
    """Everything read between two commits; written in one transaction."""

    batches: list[Batch] = field(default_factory=list)
    sasl: list[tuple[Any, ...]] = field(default_factory=list)
    checkpoints: dict[str, dict[str, Any] | str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # parsed / ignored / unparsed lines


@dataclass(slots=True)
class WriterStats:
    units: int = 0
    transactions: int = 0
    messages: int = 0
    attempts: int = 0
    sasl: int = 0
    retries: int = 0
    last_error: str = ""
    last_commit: float = 0.0
    waiting: int = 0


class StoreWriter:
    """Writes :class:`Unit` s in order; retries with backoff while the store fails."""

    def __init__(
        self,
        engine: Engine,
        host: str,
        *,
        attempts_days: int = 90,
        max_units: int = 64,
        backoff_max: float = 5.0,
        on_outage: Callable[[float, str], None] | None = None,
        outage_after: float = 60.0,
    ) -> None:
        self.engine = engine
        self.on_outage = on_outage
        self.outage_after = outage_after
        self.host = host
        self.attempts_days = attempts_days
        self.backoff_max = backoff_max
        self.stats = WriterStats()
        self._q: queue.Queue[Unit] = queue.Queue(maxsize=max_units)
        self._pending: list[Unit] = []  # taken from the queue, not committed yet

    def put(self, unit: Unit, stop: threading.Event, timeout: float | None = None) -> bool:
        """Queue a unit; waits while the queue is full (the store is down). False if stopped
        (or ``timeout`` passed): the unit's lines are then read again after a restart."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                self._q.put(unit, timeout=0.2)
                return True
            except queue.Full:
                self.stats.waiting = self._q.qsize()
        return False

    def idle(self) -> bool:
        return self._q.empty() and not self._pending

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued is committed (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.02)
        return self.idle()

    def run(self, stop: threading.Event) -> None:
        """The component loop: until ``stop`` and nothing is left to write."""
        backoff = 0.1
        failing_since: float | None = None
        reported = False
        while True:
            if not self._pending:
                try:
                    self._pending.append(self._q.get(timeout=0.2))
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
            while len(self._pending) < 32:
                try:
                    self._pending.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                self.write(self._pending)
            except Exception as exc:
                from mailwarden.errors import StoreError

                self.stats.retries += 1
                self.stats.last_error = str(exc)
                now = time.monotonic()
                failing_since = failing_since or now
                if not reported and now - failing_since >= self.outage_after:
                    reported = True
                    if self.on_outage is not None:
                        self.on_outage(now - failing_since, str(exc)[:300])
                if not isinstance(exc, StoreError):
                    log.exception("store write failed")
                log.warning(
                    "store write failed, retrying",
                    extra={
                        "error": str(exc)[:300],
                        "retry_in": backoff,
                        "units": len(self._pending),
                    },
                )
                # On shutdown the store may still be down: what is not committed is simply read
                # again after the restart (its checkpoint was not saved), so nothing is lost by
                # leaving.
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.backoff_max)
                continue
            backoff = 0.1
            failing_since, reported = None, False
            self._pending = []

    def write(self, units: list[Unit]) -> None:
        from mailwarden.report.metrics import record_line_counts
        from mailwarden.store.db import write_transaction
        from mailwarden.store.ingest import Writer
        from mailwarden.store.retention import cutoffs
        from mailwarden.store.service import insert_sasl, save_checkpoint

        a_cut, _ = cutoffs(self.attempts_days, 1)
        now = time.time()
        checkpoints: dict[str, dict[str, Any] | str] = {}
        n_msg = n_att = 0
        counts: dict[str, int] = {}
        for u in units:
            for k, v in u.counts.items():
                counts[k] = counts.get(k, 0) + v
        with write_transaction(self.engine) as conn:
            sasl: list[tuple[Any, ...]] = []
            for u in units:
                # one Writer per unit: a message written open by one unit and complete by the
                # next is then an update of a known row, never a second insert in one batch
                w = Writer(conn, attempts_cutoff=a_cut)
                for b in u.batches:
                    w.write(b)
                st = w.finish()
                n_msg += st.messages
                n_att += st.attempts
                sasl.extend(u.sasl)
                checkpoints.update(u.checkpoints)
            n_sasl = insert_sasl(conn, sasl)
            for source, data in checkpoints.items():
                save_checkpoint(conn, self.host, source, data, now)
            if any(counts.values()):
                try:  # the /metrics line counters: best effort, the rows go in without them
                    with conn.begin_nested():
                        record_line_counts(conn, counts)
                except Exception as exc:
                    log.debug("line counts not recorded: %s", exc)
        s = self.stats
        s.units += len(units)
        s.transactions += 1
        s.messages += n_msg
        s.attempts += n_att
        s.sasl += n_sasl
        s.last_commit = now
        s.waiting = self._q.qsize()


def sasl_row(ev: SaslFailure) -> tuple[Any, ...]:
    """A :data:`mailwarden.store.service.SASL_COLUMNS` row; the key hashes the line's content."""
    key = hashlib.blake2b(
        f"{ev.client_ip}|{ev.client_name}|{ev.method}|{ev.sasl_username}|{ev.detail}".encode(
            "utf-8", "replace"
        ),
        digest_size=10,
    ).hexdigest()
    return (
        ev.host,
        ev.ts,
        key,
        ev.client_name[:255],
        ev.client_ip,
        ev.method[:32],
        ev.sasl_username[:255],
        ev.detail[:500],
    )


@dataclass(slots=True)
class IngestStats:
    lines: int = 0
    events: int = 0
    unparsed: int = 0
    deliveries: int = 0
    sasl_failures: int = 0
    units: int = 0
    open_messages: int = 0
    restored: int = 0
    last_event_ts: float = 0.0
    snapshot_bytes: int = 0


class JournalSource:
    """The journal read by a thread (``journalctl -f -o json``), drained on each poll."""

    key = "journal:"

    def __init__(self, cursor: str) -> None:
        from mailwarden.sources.journal import CHECKPOINT_KEY, JournalReader

        store = MemoryCheckpointStore()
        if cursor:
            store.save(Checkpoint(CHECKPOINT_KEY, 0, 0, "", cursor=cursor))
        self.reader = JournalReader(store=store)
        self.cursor = cursor
        self._q: queue.Queue[bytes] = queue.Queue(maxsize=100_000)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._t = threading.Thread(target=self._run, name="journal", daemon=True)
        self._t.start()

    def _run(self) -> None:
        try:
            for rec in self.reader.records(self._stop):
                while not self._stop.is_set():
                    try:
                        self._q.put(rec, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surfaced by poll(): the component restarts
            self._error = exc

    def poll(self) -> list[bytes]:
        if self._error is not None:
            raise self._error
        out: list[bytes] = []
        while len(out) < 20_000:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self._stop.set()
        self.reader.close()
        self._t.join(5)


class LogIngest:
    """Follow the log, feed the breaker, fold messages into store units (see module doc)."""

    def __init__(
        self,
        *,
        engine: Engine,
        host: str,
        writer: StoreWriter,
        classifier: Classifier,
        paths: Iterable[str] = (),
        journal: bool = False,
        from_start: bool = False,
        tz: Any = None,
        commit_interval: float = 1.0,
        observe: Callable[[Delivery], object] | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.writer = writer
        self.classifier = classifier
        self.paths = [str(p) for p in paths]
        self.journal = journal
        self.from_start = from_start
        self.tz = tz
        self.commit_interval = commit_interval
        self.observe = observe
        self.stats = IngestStats()
        self.hosts: set[str] = set()  # syslog host names seen (fleet: whose rows these are)
        self.followers: list[tuple[Follower, Any, Any]] = []  # (follower, envelope, parser)
        self.jsource: JournalSource | None = None
        self.folder: Any = None
        self._sasl: list[tuple[Any, ...]] = []
        self._counts: dict[str, int] = {}
        self._batches: list[Batch] = []
        self._flushed: dict[tuple[str, str, float], tuple[Any, ...]] = {}
        self._dirty = False
        self._committed: tuple[Any, ...] = ()
        self._next_commit = 0.0

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        """Load checkpoints and the correlator snapshot from the store; open the sources."""
        from mailwarden.pipeline import Folder
        from mailwarden.service.snapshot import restore
        from mailwarden.sources import Envelope, PostfixParser
        from mailwarden.store.service import load_checkpoint

        self.folder = Folder(self.classifier, store=True, send=self._take_batch)
        snap = load_checkpoint(self.engine, self.host, CORRELATOR_SOURCE)
        if snap is not None:
            try:
                self.stats.restored = restore(self.folder.correlator, snap)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("correlator snapshot unreadable; starting without it: %s", exc)
        if self.journal:
            cp = checkpoint_from_dict(load_checkpoint(self.engine, self.host, JournalSource.key))
            self.jsource = JournalSource(cp.cursor if cp else "")
        for p in self.paths:
            # saving is the writer's job (with the rows, in one transaction): the follower's
            # store only answers with what was loaded here
            store = MemoryCheckpointStore()
            cp = checkpoint_from_dict(load_checkpoint(self.engine, self.host, p))
            if cp is not None:
                store.save(cp)
            f = Follower(p, store=store, from_start=self.from_start)
            env = Envelope(source=p, tz=self.tz)
            self.followers.append((f, env, PostfixParser()))
        log.info(
            "following the log",
            extra={
                "sources": self.paths + (["journal"] if self.journal else []),
                "restored_messages": self.stats.restored,
            },
        )

    def _take_batch(self, msg: Any) -> None:
        self._batches.append(msg[1])

    # -- one round ---------------------------------------------------------------------------
    def step(self) -> bool:
        """Read what is new and feed it on; True when anything was read."""
        from mailwarden.sources import parse_lines
        from mailwarden.sources.journal import parse_journal
        from mailwarden.sources.stats import ParseStats

        busy = False
        stats = ParseStats()
        for f, env, parser in self.followers:
            for chunk in f.poll():
                busy = True
                self.stats.lines += len(chunk.lines)
                evs = parse_lines(
                    chunk.lines, env=env, stats=stats, parser=parser, start_offset=chunk.offset
                )
                self._feed(evs)
        if self.jsource is not None:
            recs = self.jsource.poll()
            if recs:
                busy = True
                self.stats.lines += len(recs)
                holder: list[str] = []
                self._feed(parse_journal(recs, stats=stats, cursor=holder))
                if holder:
                    self.jsource.cursor = holder[0]
        self.stats.unparsed += stats.unparsed
        for k in ("parsed", "ignored", "unparsed"):
            self._counts[k] = self._counts.get(k, 0) + int(getattr(stats, k))
        if busy:
            self._dirty = True
        return busy

    def _feed(self, evs: Iterable[PostfixEvent | Unparsed]) -> None:
        folder = self.folder
        observe = self.observe
        batch: list[PostfixEvent | Unparsed] = []
        for ev in evs:
            cls = ev.__class__
            if cls is Unparsed:
                continue
            self.stats.events += 1
            if cls is Delivery:
                self.stats.deliveries += 1
                if observe is not None:
                    try:
                        observe(ev)  # type: ignore[arg-type]
                    except Exception:
                        log.exception("breaker failed on a delivery")
            elif cls is MxReply:
                # a block at one MX (greeting, RCPT) trips its provider before the last MX
                # answers, or when a backup MX accepts
                if observe is not None and ev.reply is not None:  # type: ignore[union-attr]
                    try:
                        observe(ev.as_attempt())  # type: ignore[union-attr]
                    except Exception:
                        log.exception("breaker failed on a connection-level reply")
            elif cls is SaslFailure:
                self.stats.sasl_failures += 1
                self._sasl.append(sasl_row(ev))  # type: ignore[arg-type]
                continue
            batch.append(ev)
            self.hosts.add(ev.host)  # type: ignore[union-attr]
            ts = ev.ts  # type: ignore[union-attr]
            if ts > self.stats.last_event_ts:
                self.stats.last_event_ts = ts
        if batch:
            folder.events(batch, [])

    # -- commit ------------------------------------------------------------------------------
    def _position(self) -> tuple[Any, ...]:
        """Where the sources stand (a rotated file let go changes it without new lines)."""
        out: list[Any] = []
        for f, _e, _p in self.followers:
            cp = f.checkpoint()
            out.append(None if cp is None else (cp.inode, cp.offset, cp.rotated))
        return tuple(out)

    def due(self, now: float) -> bool:
        if now < self._next_commit:
            return False
        if not self._dirty and self._position() != self._committed:
            self._dirty = True
        return self._dirty

    def commit(self, stop: threading.Event, timeout: float | None = None) -> bool:
        """Close the current unit and queue it for the writer (waits while the queue is full)."""
        from mailwarden.report.analyze import Aggregate
        from mailwarden.service.snapshot import snapshot

        folder = self.folder
        self._flush_open()
        folder.flush_batch()
        folder.agg = Aggregate()  # the daemon keeps no running report: bounded memory
        unit = Unit(self._batches, self._sasl, {}, self._counts)
        self._batches, self._sasl, self._counts = [], [], {}
        for f, _env, _p in self.followers:
            cp = f.checkpoint()
            if cp is not None:
                unit.checkpoints[f.path] = asdict(cp)
        if self.jsource is not None and self.jsource.cursor:
            unit.checkpoints[JournalSource.key] = asdict(
                Checkpoint(JournalSource.key, 0, 0, "", time.time(), cursor=self.jsource.cursor)
            )
        t0 = time.monotonic()
        snap = json.dumps(snapshot(folder.correlator), separators=(",", ":"))
        cost = time.monotonic() - t0
        unit.checkpoints[CORRELATOR_SOURCE] = snap
        self.stats.open_messages = len(folder.correlator)
        self.stats.snapshot_bytes = len(snap)
        self._dirty = False
        self._committed = self._position()
        # many open messages (a big deferred queue) make the snapshot costly: commit less often
        # so that it never takes more than a tenth of the time
        self._next_commit = time.monotonic() + max(self.commit_interval, 10 * cost)
        ok = self.writer.put(unit, stop, timeout)
        if ok:
            self.stats.units += 1
        return ok

    def _flush_open(self) -> None:
        """Write open messages that are queued or have attempts, when they changed."""
        folder = self.folder
        seen: dict[tuple[str, str, float], tuple[Any, ...]] = {}
        for slot in folder.correlator._open.values():
            m = slot[0]
            if m.nrcpt is None and not m.attempts:
                continue  # still arriving: sender, size, message-id may be missing yet
            key = (m.host, m.qid, m.arrival)
            sig = (len(m.attempts), m.nrcpt, m.expired_at, m.bounce_of, len(m.notices), m.held)
            if self._flushed.get(key) != sig:
                folder.message(m)
                # what is written need not be kept (nor snapshotted): a long-deferred message
                # keeps only its last attempt, which also keeps it "started" for the correlator
                if len(m.attempts) > 1:
                    del m.attempts[:-1]
                sig = (len(m.attempts), *sig[1:])
            seen[key] = sig
        self._flushed = seen

    def close(self) -> None:
        for f, _e, _p in self.followers:
            f.close()
        self.followers = []
        if self.jsource is not None:
            self.jsource.close()
            self.jsource = None

    def run(self, stop: threading.Event, *, poll: float, tick: Callable[[], None] | None) -> None:
        """The component loop: read, feed, commit on schedule; final commit on stop."""
        self.start()
        try:
            while not stop.is_set():
                busy = self.step()
                if tick is not None:
                    tick()
                if self.due(time.monotonic()):
                    self.commit(stop)
                if not busy:
                    stop.wait(poll)
            # final unit: what was read is committed before we go (the writer drains it)
            if self._dirty or (self.followers and self._position() != self._committed):
                self.commit(threading.Event(), timeout=10.0)
        finally:
            self.close()
