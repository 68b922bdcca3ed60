"""The C accelerator of ``mailwarden analyze`` (``_postfixscan``) and its Python side.

:class:`FastShard` runs what one analyze worker does (:func:`mailwarden.pipeline.run_shard`:
shard filter -> :func:`~mailwarden.sources.parse_lines` -> ``Folder.events`` ->
:class:`~mailwarden.sources.Correlator` -> ``Folder.message``) over whole buffers of a file in
C. The C code handles the frequent, well-defined lines itself; every other line comes back here
(:meth:`FastShard._slow_line`, :meth:`FastShard._slow_msg`), is read by the pure-Python code
exactly as the reference reads it, and its event goes into the same C correlator. Replies,
providers, classification and user names are asked of the Python objects (cached in C). The
result (the folder's aggregate, store batches, parse counters, unparsed samples) is the same as
the reference's: ``tests/sources/test_accel.py`` compares them on every corpus.

The extension is optional: :func:`available` is False when it was not built (or
``MAILWARDEN_PURE_PYTHON=1`` is set), and the pipeline then runs the pure-Python code.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from mailwarden.errors import SourceError
from mailwarden.events import (
    Arrival,
    BounceNotice,
    Delivery,
    Expired,
    Held,
    InboundReject,
    MessageIdSeen,
    MxReply,
    QueueActive,
    Removed,
    SaslFailure,
    Unparsed,
)
from mailwarden.sources.postfix import _TZ_SIGNS, IGNORED, PostfixParser, is_postfix

if TYPE_CHECKING:
    from mailwarden.sources.files import LogFile
    from mailwarden.sources.stats import ParseStats
    from mailwarden.sources.syslog import Envelope

try:
    from mailwarden.sources import _postfixscan  # type: ignore[attr-defined]
except ImportError:  # not built (no compiler when installed): the pure-Python path runs
    _postfixscan = None
else:
    _postfixscan.set_event_types(
        Arrival,
        Delivery,
        QueueActive,
        MessageIdSeen,
        Removed,
        BounceNotice,
        Expired,
        Held,
        InboundReject,
        MxReply,
    )

#: Bytes handed to the C code at a time (whole lines; the rest waits for the next block).
CHUNK = 1 << 20
_MAX_LINE = 64 * 1024
_SYSLOGD_TAGS = (b"last", b"--", b"message")


def mask_addresses(text: str) -> str:
    """``text`` with its mail addresses replaced by ``<addr>``: the first step of
    :func:`mailwarden.store.kinds.normalise_reply` (in C when built)."""
    if _postfixscan is not None:
        return str(_postfixscan.mask_addresses(text))
    from mailwarden.store.kinds import _ADDR

    return _ADDR.sub("<addr>", text)


def extension() -> Any:
    """The C module itself (None when not built)."""
    return _postfixscan


def built() -> bool:
    """Whether the C extension is importable."""
    return _postfixscan is not None


def available() -> bool:
    """Whether analyze uses the C extension (built, and not turned off with
    ``MAILWARDEN_PURE_PYTHON=1``)."""
    return _postfixscan is not None and os.environ.get("MAILWARDEN_PURE_PYTHON", "") in ("", "0")


def chunks(lf: LogFile, on_error: Callable[[SourceError], None]) -> Iterator[Any]:
    """The content of ``lf`` in blocks of whole lines (the last one may lack its newline).

    Plain files are read in big blocks; compressed ones line by line through
    :meth:`LogFile.lines` (so a damaged archive stops at the same line, with the same error,
    as in the pure-Python path) and joined.
    """
    if lf.compression != "plain":
        buf: list[bytes] = []
        n = 0
        for raw in lf.lines(on_error):
            buf.append(raw)
            n += len(raw)
            if n >= CHUNK:
                yield b"".join(buf)
                buf = []
                n = 0
        if buf:
            yield b"".join(buf)
        return
    offset = 0
    carry: list[bytes] = []
    # one buffer for the whole file (a fresh block per read costs page faults and zeroing);
    # the consumer is done with a yielded view before the next read
    space = bytearray(CHUNK)
    view = memoryview(space)
    try:
        with open(lf.path, "rb", buffering=0) as fh:
            while True:
                got = fh.readinto(space)
                if not got:
                    break
                start = 0
                if carry:
                    i = space.find(b"\n", 0, got)
                    if i < 0:
                        carry.append(bytes(view[:got]))
                        continue
                    first = b"".join([*carry, view[: i + 1]])
                    carry = []
                    start = i + 1
                    offset += len(first)
                    yield first
                cut = space.rfind(b"\n", 0, got) + 1
                if cut > start:
                    offset += cut - start
                    yield view[start:cut]
                    start = cut
                if start < got:
                    carry.append(bytes(view[start:got]))
        if carry:
            yield b"".join(carry)
    except OSError as exc:
        what = exc.strerror or str(exc) or type(exc).__name__
        on_error(SourceError(f"read error: {what}", source=str(lf.path), offset=offset))


class FastShard:
    """One analyze worker's files through the C loop, into ``folder`` (a
    :class:`mailwarden.pipeline.Folder`), counters into ``stats``."""

    def __init__(
        self,
        me: int,
        nshards: int,
        folder: Any,
        *,
        stats: ParseStats,
        unparsed: list[Unparsed],
        show_unparsed: bool,
        max_unparsed: int,
    ) -> None:
        from mailwarden.report.analyze import KindAgg

        if _postfixscan is None:
            raise RuntimeError("the C accelerator is not built")
        self.folder = folder
        self.stats = stats
        self.unparsed = unparsed
        self.show_unparsed = show_unparsed
        self.max_unparsed = max_unparsed
        self.parser = PostfixParser()
        if getattr(folder, "_parser", None) is None:
            folder._parser = self.parser  # one reply cache for both
        self.since = float("-inf") if folder.since is None else folder.since
        self.until = float("inf") if folder.until is None else folder.until
        corr = folder.correlator
        clf = folder.clf
        self.shard = _postfixscan.Shard(
            me,
            nshards,
            folder,
            folder.store,
            self.since,
            self.until,
            folder.batch_messages,
            folder.classify_row,
            clf.provider_for_host,
            clf.provider_for_domain,
            is_postfix,
            corr.user_name,
            KindAgg,
            stats.program,
            self.parser.reply,
            resolve_users=corr.resolve_users,
            horizon=corr.horizon,
            max_open=corr.max_open,
        )
        self._env: Envelope | None = None

    # -- the lines the C code leaves to Python ---------------------------------------------
    def _keep(self, u: Unparsed) -> None:
        if self.show_unparsed and len(self.unparsed) < self.max_unparsed:
            self.unparsed.append(u)

    def _slow_line(self, raw: bytes, asked: bool) -> tuple[float, str, str, bytes] | None:
        """The envelope of a line, as :func:`~mailwarden.sources.parse_lines` reads it.
        ``asked``: the C code called the stamp cache on a miss (the reference then reads the
        line with :meth:`Envelope.split`)."""
        env = self._env
        assert env is not None
        stats = self.stats
        hit = None
        at = 16
        if not asked:
            hit = env.stamps.sec.get(raw[:15])
            if hit is None and raw[26:27] in _TZ_SIGNS and raw[32:33] == b" ":
                base = env.stamps.iso_cache.get(raw[:19] + raw[26:32])
                frac = raw[20:26]
                if base is not None and frac.isdigit() and raw[19:20] == b".":
                    hit = base + int(frac) / 1e6
                    at = 33
        parts = None
        if not (hit is None or raw[at - 1 : at] != b" " or len(raw) > _MAX_LINE or b"\x00" in raw):
            if raw[-1] == 10:
                parts = raw[at : -2 if raw[-2] == 13 else -1].split(b" ", 2)
            else:
                parts = raw[at:].split(b" ", 2)
            if len(parts) != 3:
                parts = None
        if parts is None:
            out = env.split(raw)
            if isinstance(out, str):
                if out == "syslogd":
                    stats.foreign += 1
                    stats.program("syslogd")
                    return None
                self._keep(stats.unparsed_line(env.source, -1, raw, out))
                return None
            ts, host, program, _pid, msg = out
            return ts, host, program, msg
        assert hit is not None
        hb, tag, msg = parts
        info = self.parser.tag(tag)
        if info is None:
            if tag in _SYSLOGD_TAGS:
                stats.foreign += 1
                stats.program("syslogd")
                return None
            self._keep(stats.unparsed_line(env.source, -1, raw, "no program tag"))
            return None
        return hit, env.host(hb), info[0], msg

    def _slow_msg(self, raw: bytes, ts: float, host: str, program: str, msg: bytes) -> Any:
        """A Postfix message the C code does not read: parsed by :class:`PostfixParser`, then
        what ``Folder.events`` does before the correlator; returns the event to correlate."""
        ev = self.parser.message(ts, host, program, msg)
        stats = self.stats
        if isinstance(ev, str):
            if ev == IGNORED:
                stats.ignored += 1
                return None
            assert self._env is not None
            self._keep(stats.unparsed_line(self._env.source, -1, raw, ev))
            return None
        stats.parsed += 1
        folder = self.folder
        if not self.since <= ev.ts < self.until:
            folder.agg.outside_period += 1
            return None
        cls = ev.__class__
        if cls is SaslFailure:
            assert isinstance(ev, SaslFailure)
            folder.agg.sasl_failures[ev.client_ip or ev.client_name] += 1
            return None
        if cls is InboundReject:
            assert isinstance(ev, InboundReject)
            folder.inbound(ev)
            if not ev.qid:
                return None
        elif cls is MxReply and not ev.qid:
            assert isinstance(ev, MxReply)
            for p in folder.mx_alone(ev):
                self.shard.touch_provider(p)
            return None
        return ev

    # -- files -------------------------------------------------------------------------------
    def run_file(
        self,
        lf: LogFile,
        env: Envelope,
        on_error: Callable[[SourceError], None],
        counter: list[int],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Every line of ``lf`` (``counter[0]``: bytes read; ``progress(bytes)`` per block)."""
        self._env = env
        st = env.stamps
        shard = self.shard
        shard.begin(
            stamps=st,
            min_cache=st._min,
            trad=st.trad,
            iso=st.iso,
            sec=st.sec,
            iso_cache=st.iso_cache,
            host=env.host,
            slow_line=self._slow_line,
            slow_msg=self._slow_msg,
        )
        # the loop makes millions of short-lived tuples and strings and no cycles: the cyclic
        # collector would only walk them
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for block in chunks(lf, on_error):
                counter[0] += len(block)
                shard.feed(block)
                if progress is not None:
                    progress(counter[0])
            shard.release()  # "connect to" lines never claimed, as they are
        finally:
            if gc_was:
                gc.enable()
            total, parsed, ignored, foreign, ooo = shard.end()
            stats = self.stats
            stats.total += total
            stats.parsed += parsed
            stats.ignored += ignored
            stats.foreign += foreign
            stats.out_of_order += ooo
            self._env = None

    def finish(self) -> None:
        """Fold every message still open and add the C aggregates to ``folder.agg``."""
        from collections import Counter

        from mailwarden.report.analyze import Aggregate, OriginAgg, ProviderAgg

        out = self.shard.finish()
        messages, recipients, attempts, first, last, outside, provs, internal, origs = out
        agg = Aggregate(
            messages=messages,
            recipients=recipients,
            attempts=attempts,
            first_ts=first,
            last_ts=last,
            outside_period=outside,
        )
        for name, rc, dl, df, bo, ex, at, kinds in provs:
            agg.providers[name] = ProviderAgg(rc, dl, df, bo, ex, at, kinds)
        agg.internal = internal
        for key, name, ms, rc, dl, df, bo, provcount in origs:
            agg.origins[key] = OriginAgg(name, ms, rc, dl, df, bo, Counter(provcount))
        # what Python added meanwhile (inbound rejects, SASL failures, connection-level
        # replies) on top: the C side has every provider already, in the reference's order
        agg.merge(self.folder.agg)
        self.folder.agg = agg
