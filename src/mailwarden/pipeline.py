"""The analyze driver: log files -> parse -> correlate -> classify -> aggregate (+ store) -> report.

Parallel design (2 cores): every worker reads every file but keeps only the lines of its shard
(:func:`shard_of`: the last character of the queue id), so each worker sees complete message
histories and needs no cross-worker merging. The parent is worker 0 itself (it would
otherwise wait idle with its memory); the others are forked. A worker parses
(:func:`mailwarden.sources.parse_lines`), correlates (:class:`~mailwarden.sources.Correlator`),
classifies with a cache (:meth:`Folder.classify`), folds every finished message into a
mergeable :class:`~mailwarden.report.analyze.Aggregate` and, when storing, into compact tuples
(:class:`~mailwarden.store.rows.Batch`) that it writes itself, one short write transaction per
batch, taking turns with the other worker (:class:`ShardWriter`). All of that but the rare
lines runs in C when the accelerator is built (:func:`fold_files`,
:mod:`mailwarden.sources.accel`; the Python code is the reference and the fallback). The
parent prepares the store before the workers start and finishes it after them
(:class:`Importer`), merges the aggregates and builds the report document. Small inputs run
in-process.

The classifier is loaded before the workers fork, so they share it (and ``gc.freeze`` keeps
their collectors from copying it).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mailwarden.events import (
    Delivery,
    InboundReject,
    Message,
    MxReply,
    PostfixEvent,
    SaslFailure,
    Unparsed,
)
from mailwarden.report.analyze import Aggregate, InboundAgg, KindAgg

if TYPE_CHECKING:
    from mailwarden.classify.engine import Classifier
    from mailwarden.errors import SourceError
    from mailwarden.sources.files import LogFile
    from mailwarden.sources.postfix import ConnectClaims
    from mailwarden.sources.stats import ParseStats

#: Inputs smaller than this run in one process (forking costs more than it saves).
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
#: Messages per store batch (one write transaction). A first import into an empty store
#: appends to tables without secondary indexes: small batches keep the workers small. Into a
#: store with data, every batch rewrites the index pages it touches: bigger batches rewrite
#: them less often (2nd 2M-line log into a full store: 30 s at 2,000, 22 s at 10,000).
BATCH_MESSAGES = 2000
BATCH_MESSAGES_FULL_STORE = 10000
MAX_UNPARSED_SHOWN = 10_000
_CLASSIFY_CACHE = 10_000
_MAX_TEXT = 600  # = store.schema.MAX_INDEXED_TEXT (not imported: workers may not store)

FINAL_STATES = {"sent": "delivered", "bounced": "bounced", "expired": "bounced"}
# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Identity of a log file for the ``imports`` table: first-line hash + inode + size."""

    path: str
    first_line_hash: str
    inode: int
    size: int


def fingerprint(lf: LogFile) -> Fingerprint:
    """The fingerprint of a listed log file (first line read through its decompressor)."""
    try:
        with lf.open() as f:
            first = f.readline(8192)
    except (OSError, EOFError, ValueError):
        first = b""
    return Fingerprint(str(lf.path), hashlib.sha256(first).hexdigest(), lf.inode, lf.size)


def shard_of(raw: bytes, nshards: int) -> int:
    """The worker a raw log line belongs to.

    ``QID: ...`` lines go by the last character of the queue id (the byte before the first
    ``": "`` at least six characters after the syslog tag), so every line of one message meets
    in one worker; ``NOQUEUE: ...`` lines (smtpd's rejections, costly to read) by their length
    and the last digit of the pid, so that they spread; other lines by whatever stands there
    (each line goes to exactly one worker, and nothing but the queue id lines needs to be
    together), or to worker 0.
    """
    i = raw.find(b"]: ")
    j = raw.find(b": ", i + 9, i + 36) if i >= 0 else -1
    if j <= 0:
        return 0
    if raw[j - 7 : j] == b"NOQUEUE":
        return (len(raw) + raw[i - 1]) % nshards
    return raw[j - 1] % nshards


def _shard_lines(
    f: Iterable[bytes], me: int, n: int, counter: list[int], claims: ConnectClaims | None = None
) -> Iterator[bytes]:
    """The lines of ``f`` in shard ``me`` of ``n`` (:func:`shard_of`, inlined: this loop sees
    every line of the input in every worker); ``counter[0]`` counts bytes read.

    ``claims``: smtp(8)'s ``connect to`` lines are claimed before the shard filter (see
    :class:`~mailwarden.sources.postfix.ConnectClaims`): every worker holds them, the worker
    of the claiming line passes them on with its queue id and counts the dropped twins in
    ``claims.twins``; held lines stay held (:func:`_released`)."""
    if n == 1:
        if claims is not None:
            f = _counted(f, counter)
            yield from claims.lines(f)
            return
        for raw in f:
            counter[0] += len(raw)
            yield raw
        return
    got = 0
    held = claims.held if claims is not None else None
    for raw in f:
        got += len(raw)
        i = raw.find(b"]: ")
        if claims is not None and i > 0 and (held or raw.startswith(b"connect to ", i + 3)):
            if raw.startswith(b"connect to ", i + 3):
                out = claims.hold(raw, i)
                if out is not None:
                    for r in out:  # unclaimed (limits): as they are
                        if shard_of(r, n) == me:
                            yield r
                    continue
            else:
                claimed = claims.claim(raw, i)
                if claimed is not None and shard_of(raw, n) == me:
                    yield from claimed[0]  # same queue id: same shard
                    if claimed[1]:
                        claims.twins += 1
        j = raw.find(b": ", i + 9, i + 36) if i >= 0 else -1
        if j <= 0:
            s = 0
        elif raw[j - 7 : j] == b"NOQUEUE":
            s = (len(raw) + raw[i - 1]) % n
        else:
            s = raw[j - 1] % n
        if s == me:
            yield raw
        if got > 4_000_000:
            counter[0] += got
            got = 0
    counter[0] += got


def _counted(f: Iterable[bytes], counter: list[int]) -> Iterator[bytes]:
    for raw in f:
        counter[0] += len(raw)
        yield raw


def _released(claims: ConnectClaims, me: int, n: int) -> Iterator[bytes]:
    """The connect lines still held when a file ends (never claimed), as logged, in shard
    ``me``."""
    for raw in claims.release():
        if n == 1 or shard_of(raw, n) == me:
            yield raw


# ------------------------------------------------------------------------------------------
# Folding messages into the aggregate and store rows
# ------------------------------------------------------------------------------------------


class Folder:
    """Turns events into the aggregate (and store batches); one per worker."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        store: bool,
        since: float | None = None,
        until: float | None = None,
        send: Callable[[Any], None] | None = None,
        batch_messages: int = BATCH_MESSAGES,
    ) -> None:
        from mailwarden.sources.correlate import Correlator

        self.clf = classifier
        self.agg = Aggregate()
        self.correlator = Correlator()
        self.store = store
        self.since = since
        self.until = until
        self.send = send
        self.batch_messages = batch_messages
        self._new_batch()
        self._prov_cache: dict[tuple[str, str], str] = {}
        self._cls_cache: dict[tuple[str, str, str, str], tuple[Any, str]] = {}
        self._norm_cache: dict[tuple[Any, ...], tuple[Any, str]] = {}
        self._parser: Any = None
        self._norm_texts: dict[str, str] = {}
        self._inbound_keys: dict[tuple[Any, ...], str] = {}

    def _new_batch(self) -> None:
        from mailwarden.store.rows import Batch

        self.batch = Batch()

    def flush_batch(self) -> None:
        b = self.batch
        if self.store and self.send is not None and (b.messages or b.inbound or b.links or b.mx):
            self.send(("batch", b))
            self._new_batch()

    # -- events ------------------------------------------------------------------------------
    def events(self, evs: Iterable[PostfixEvent | Unparsed], unparsed: list[Unparsed]) -> None:
        feed = self.correlator.feed
        since = float("-inf") if self.since is None else self.since
        until = float("inf") if self.until is None else self.until
        agg = self.agg
        message = self.message
        special = (Unparsed, InboundReject, SaslFailure, MxReply)
        outside = 0
        for ev in evs:
            cls = ev.__class__
            if cls in special:
                if cls is Unparsed:
                    if len(unparsed) < MAX_UNPARSED_SHOWN:
                        unparsed.append(ev)  # type: ignore[arg-type]
                    continue
                if not since <= ev.ts < until:  # type: ignore[union-attr]
                    outside += 1
                    continue
                if cls is SaslFailure:
                    agg.sasl_failures[ev.client_ip or ev.client_name] += 1  # type: ignore[union-attr]
                    continue
                if cls is MxReply:
                    if not ev.qid:  # type: ignore[union-attr]
                        self.mx_alone(ev)  # type: ignore[arg-type]
                        continue
                else:
                    self.inbound(ev)  # type: ignore[arg-type]
                    if not ev.qid:  # type: ignore[union-attr]
                        continue
            elif not since <= ev.ts < until:  # type: ignore[union-attr]
                outside += 1
                continue
            done = feed(ev)  # type: ignore[arg-type]
            if done:
                for m in done:
                    message(m)
        agg.outside_period += outside

    def finish(self) -> None:
        for m in self.correlator.flush():
            self.message(m)
        self.flush_batch()

    def normalised(self, text: str) -> str:
        """:func:`mailwarden.store.kinds.normalise_reply`, cached by the text with its
        addresses masked (texts equal but for their addresses normalise alike)."""
        key = _mask(text)
        norm = self._norm_texts.get(key)
        if norm is None:
            from mailwarden.store.kinds import normalise_reply

            norm = normalise_reply(text)
            if len(self._norm_texts) < _CLASSIFY_CACHE:
                self._norm_texts[key] = norm
        return norm

    def inbound(self, ev: InboundReject) -> None:
        r = ev.reply
        self.inbound_parts(
            ev.ts, ev.host, ev.action, ev.stage, ev.client_name, ev.client_ip,
            r.code if r else None, r.enhanced if r else "", r.text if r else "",
            r.raw if r else "", ev.sender, ev.recipient, ev.helo,
        )  # fmt: skip

    def inbound_parts(
        self,
        ts: float,
        host: str,
        action: str,
        stage: str,
        client_name: str,
        client_ip: str,
        code: int | None,
        enh: str,
        text: str,
        raw: str,
        sender: str,
        recipient: str,
        helo: str,
    ) -> None:
        """One of our own refusals (an :class:`InboundReject` by its fields: the C
        accelerator reads the commonest ones itself); ``text`` is the reply's folded text,
        ``raw`` the text as logged."""
        norm = self.normalised(text)
        kk = (code, enh, action, stage, norm)
        key = self._inbound_keys.get(kk)
        if key is None:
            from mailwarden.store.kinds import kind_key

            key = kind_key(code, enh, f"{action}/{stage}", False, norm)
            if len(self._inbound_keys) < _CLASSIFY_CACHE:
                self._inbound_keys[kk] = key
        agg = self.agg
        agg.seen(ts)
        ib = agg.inbound.get(key)
        if ib is None:
            ib = agg.inbound[key] = InboundAgg(action, stage, code, enh, raw or text)
        ib.add(ts, client_ip or client_name)
        if self.store:
            line_key = hashlib.blake2b(
                f"{stage}|{client_ip}|{sender}|{recipient}|{raw}".encode("utf-8", "replace"),
                digest_size=10,
            ).hexdigest()
            self.batch.inbound.append(
                (
                    host,
                    ts,
                    line_key,
                    action,
                    stage,
                    client_name,
                    client_ip[:_MAX_TEXT],
                    code,
                    enh,
                    text,
                    sender,
                    recipient,
                    helo,
                )
            )
            if len(self.batch.inbound) >= 4 * self.batch_messages:
                self.flush_batch()

    # -- connection-level replies -------------------------------------------------------------
    def mx_alone(self, r: MxReply) -> list[str]:
        """A connection-level reply of no known message (a ``connect to`` line its process
        never claimed): counted and stored like the others, without a message. Returns the
        providers touched (see :meth:`mx_fold`)."""
        touched = self.mx_fold(-1, [r])
        if self.store and len(self.batch.mx) >= 4 * self.batch_messages:
            self.flush_batch()
        return touched

    def mx_fold(self, mi: int, replies: list[MxReply]) -> list[str]:
        """Fold the connection-level replies of one message (``mi``: its row in the current
        batch, -1 for none) into the aggregate (their provider's ``mx`` kinds, classified as
        a deferral with Postfix's ``dsn=`` for the same failure: :meth:`MxReply.as_attempt`)
        and, when storing, the batch (``Batch.mx``). Called by :meth:`message` and by the C
        accelerator; never flushes the batch. Returns the providers, in the order touched
        (the accelerator keeps its order of providers equal to this code's)."""
        agg = self.agg
        touched: list[str] = []
        store = self.store
        b = self.batch
        seq: dict[tuple[float, str], int] = {}
        for r in replies:
            ts = r.ts
            d = r.as_attempt()
            prov = self.provider_of(d)
            pa = agg.provider(prov)
            pa.mx_replies += 1
            touched.append(prov)
            c, kind = self.classify(d, prov)
            kinds = agg.mx_internal if c.internal else pa.mx
            self._fold_kind(kinds, prov, kind, c, d, ts, replace_new=False)
            rp = r.reply
            if store:
                n = seq[(ts, r.text)] = seq.get((ts, r.text), -1) + 1
                key = hashlib.blake2b(
                    f"{r.qid}|{r.kind}|{r.relay_ip}|{n}|{r.text}".encode("utf-8", "replace"),
                    digest_size=10,
                ).hexdigest()
                b.mx.append(
                    (
                        mi, r.host, r.qid, ts, key, r.kind, r.relay_host[:_MAX_TEXT],
                        r.relay_ip[:_MAX_TEXT], r.relay_port, prov, rp.command if rp else "",
                        rp.code if rp else None, _enhanced(d), kind,
                    )
                )  # fmt: skip
            if ts > agg.last_ts:
                agg.last_ts = ts
        return touched

    # -- messages ----------------------------------------------------------------------------
    def provider_of(self, d: Delivery) -> str:
        key = (d.relay_host, d.relay if not d.relay_host else "")
        p = self._prov_cache.get(key)
        if p is None:
            if d.relay_host:
                p = self.clf.provider_for_host(d.relay_host, d.relay_ip)
            elif d.relay and d.relay != "none" and "[" not in d.relay:
                p = "local"  # local, virtual, pipe, lmtp over a unix socket
            else:
                p = ""
            if len(self._prov_cache) > _CLASSIFY_CACHE:
                self._prov_cache.clear()
            self._prov_cache[key] = p
        if not p:
            p = self.clf.provider_for_domain(d.recipient) or "unknown"
        return p

    def classify(self, d: Delivery, provider: str) -> tuple[Any, str]:
        """(Classification, kind key) of a non-success attempt (see :meth:`classify_cached`)."""
        return self.classify_cached(d, provider)[0]

    def classify_cached(self, d: Delivery, provider: str) -> tuple[tuple[Any, str], bool]:
        """((Classification, kind key), whether it is the cached one for its kind).

        Two caches: by the exact logged text, then by the normalised reply (addresses, IPs,
        ids and numbers replaced) with everything else the classifier looks at, so that one
        "User unknown" per recipient costs one normalisation, not one classification. The
        first text of a normalised kind decides for every later one (its cited IP, its URL).
        Full caches take nothing more (they are never cleared, so what was decided stays
        decided): a text whose kind is not cached is classified on its own.
        """
        key = (d.text, d.dsn, d.status, provider)
        hit = self._cls_cache.get(key)
        if hit is not None:
            return hit, True
        from mailwarden.store.kinds import kind_key, normalise_reply

        r = d.reply
        code = r.code if r else None
        enh = _enhanced(d)
        # the whole logged text: Postfix's own prefixes ("delivery temporarily suspended: ")
        # decide too, so the cache must see them
        key2 = (normalise_reply(d.text), code, enh, r.command if r else "", *key[1:])
        hit = self._norm_cache.get(key2)
        cached = True
        if hit is None:
            c = self.clf.classify(
                d.reply, dsn=d.dsn, status=d.status, text=d.text, provider=provider
            )
            # the kind: the reply alone (not which MX host of the provider said it)
            norm = normalise_reply(r.text) if r is not None and r.text else key2[0]
            hit = (c, kind_key(code, enh, c.reason, c.internal, norm))
            if len(self._norm_cache) < _CLASSIFY_CACHE:
                self._norm_cache[key2] = hit
            else:
                cached = False
        if cached and len(self._cls_cache) < _CLASSIFY_CACHE:
            self._cls_cache[key] = hit
        return hit, cached

    def classify_row(self, text: str, dsn: str, status: str, provider: str) -> tuple[Any, ...]:
        """What :meth:`message` takes from a non-success attempt with this text, dsn= and
        status (the reply is parsed from the text, as the parser does): ``(reason, scope,
        code, enhanced, command, issuer, url, cited_ip, rule, internal, sample, kind,
        cached)``. For the C accelerator, which keeps the rows whose kind is cached (``cached``
        True) for the texts that differ from this one only in their addresses."""
        if self._parser is None:
            from mailwarden.sources.postfix import PostfixParser

            self._parser = PostfixParser()
        r = self._parser.reply_of_text(text)
        d = Delivery(0.0, "", "", "", dsn=dsn, status=status, text=text, reply=r)
        (c, kind), cached = self.classify_cached(d, provider)
        return (
            c.reason,
            c.scope,
            r.code if r else None,
            _enhanced(d),
            r.command if r else "",
            c.issuer,
            c.url,
            c.cited_ip,
            c.rule,
            c.internal,
            _sample(d),
            kind,
            cached,
        )

    def _fold_kind(
        self,
        kinds: dict[str, KindAgg],
        prov: str,
        kind: str,
        c: Any,
        d: Delivery,
        ts: float,
        *,
        replace_new: bool,
    ) -> None:
        """Count one non-success reply ``d`` (classified ``c``, of ``kind``) in ``kinds``,
        creating its :class:`KindAgg` from this first one; when storing, put the kind's row
        in the batch (``Batch.kinds``) if the batch has none yet, or, with ``replace_new``,
        when the kind is new to ``kinds``."""
        ka = kinds.get(kind)
        new = ka is None
        if ka is None:
            r = d.reply
            ka = kinds[kind] = KindAgg(
                c.reason, c.scope, r.code if r else None, _enhanced(d), r.command if r else "",
                c.issuer, c.url, c.cited_ip, c.rule, _sample(d),
            )  # fmt: skip
        ka.add(ts)
        b = self.batch
        if self.store and ((new and replace_new) or (prov, kind) not in b.kinds):
            b.kinds[(prov, kind)] = (
                prov, kind, ka.reason, ka.scope, ka.code, ka.enhanced, ka.command, ka.issuer,
                ka.url, ka.cited_ip, ka.rule, c.internal, ka.sample, ts, ts,
            )  # fmt: skip

    def message(self, m: Message) -> None:
        agg = self.agg
        agg.messages += 1
        agg.seen(m.arrival)
        okind, ident, name = origin_of(m)
        origin = agg.origin(okind, ident, name)
        origin.messages += 1
        store = self.store
        b = self.batch
        mi = len(b.messages)
        if store:
            b.messages.append(
                (
                    m.host,
                    m.qid,
                    m.arrival,
                    okind,
                    ident,
                    name,
                    m.sender[:_MAX_TEXT],
                    m.message_id[:_MAX_TEXT],
                    m.size,
                    m.nrcpt,
                    m.bounce_of,
                    m.expired_at,
                    m.removed_at,
                )
            )
            for n in m.notices:
                b.links.append((m.host, n.notice_qid, m.qid))
        final: dict[str, tuple[str, str]] = {}
        for d in m.attempts:
            status = d.status
            if status not in ("sent", "deferred", "bounced", "expired"):
                continue  # address verification probes (deliverable/undeliverable)
            prov = self.provider_of(d)
            pa = agg.provider(prov)
            pa.attempts += 1
            agg.attempts += 1
            ts = d.ts
            reason = kind = ""
            if status != "sent":
                c, kind = self.classify(d, prov)
                reason = c.reason
                kinds = agg.internal if c.internal else pa.kinds
                self._fold_kind(kinds, prov, kind, c, d, ts, replace_new=True)
            final[d.recipient[:_MAX_TEXT]] = (status, prov)
            if store:
                r = d.reply
                b.attempts.append(
                    (
                        mi,
                        ts,
                        d.recipient[:_MAX_TEXT],
                        d.orig_recipient[:_MAX_TEXT],
                        d.relay_host,
                        d.relay_ip,
                        d.relay_port,
                        prov,
                        d.delay,
                        d.delays,
                        d.dsn,
                        status,
                        d.conn_use,
                        r.code if r else None,
                        r.enhanced if r else "",
                        kind,
                        reason,
                    )
                )
            if ts > agg.last_ts:
                agg.last_ts = ts
        if m.mx_replies:
            self.mx_fold(mi, m.mx_replies)
        expired = m.expired_at is not None
        for status, prov in final.values():
            pa = agg.provider(prov)
            pa.recipients += 1
            state = FINAL_STATES.get(status, "deferred")
            if state == "deferred" and expired:
                state = "bounced"
                pa.expired += 1
            if state == "delivered":
                pa.delivered += 1
                origin.delivered += 1
            elif state == "bounced":
                pa.bounced += 1
                origin.bounced += 1
            else:
                pa.deferred += 1
                origin.deferred += 1
            origin.providers[prov] += 1
        origin.recipients += len(final)
        agg.recipients += len(final)
        if store and len(b.messages) >= self.batch_messages:
            self.flush_batch()


def _mask(text: str) -> str:
    """``text`` with its mail addresses as ``<addr>`` (the first step of normalise_reply)."""
    from mailwarden.sources.accel import mask_addresses

    return mask_addresses(text)


def _enhanced(d: Delivery) -> str:
    """The reply's enhanced status code; Postfix's ``dsn=`` only when the reply has no code
    of its own (a remote ``554`` without one is not shown as Postfix's ``4.0.0``)."""
    r = d.reply
    if r is not None and (r.enhanced or r.code is not None):
        return r.enhanced
    return d.dsn


def _sample(d: Delivery) -> str:
    """The reply as the receiver gave it (code, enhanced code, text folded to one line), or
    Postfix's own reason when there is no remote reply."""
    r = d.reply
    if r is not None and r.remote and r.text:
        return " ".join(x for x in (str(r.code) if r.code else "", r.enhanced, r.text) if x)
    return d.text


def origin_of(m: Message) -> tuple[str, str, str]:
    """``(kind, id, name)`` of who submitted a message (see docs/analyze-json.md)."""
    k = m.origin_kind
    if k == "sasl":
        return "sasl", m.sasl_username[:_MAX_TEXT], m.client_ip
    if k == "client":
        return "client", m.client_ip, m.client_name
    if k == "uid":
        return "uid", str(m.uid), m.user
    if m.bounce_of or (not m.sender and m.nrcpt is not None):
        return "bounce", "", "MAILER-DAEMON"
    return "unknown", "", ""


# ------------------------------------------------------------------------------------------
# Running a shard (in a worker process or in-process)
# ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ShardResult:
    agg: Aggregate
    stats: ParseStats
    unparsed: list[Unparsed] = field(default_factory=list)
    bytes_read: dict[str, int] = field(default_factory=dict)
    stored: Any = None  # ImportStats of this shard's writer
    links: list[tuple[str, str, str]] = field(default_factory=list)  # for the coordinator


@dataclass(frozen=True, slots=True)
class StorePlan:
    """How the workers of one import write (decided by :class:`Importer` before they start)."""

    url: str
    base: Any  # mailwarden.store.ingest.ImportBase
    attempts_cutoff: float
    skip: bool  # every file was imported before: write nothing


class ShardWriter:
    """A worker's own writer: each batch in its own short write transaction.

    Storing where the rows are made saves pickling them to another process, and lets the
    Python side of writing run on both cores; the database's write lock serialises only the
    inserts themselves. Message ids are allocated per batch under that lock (see
    :class:`mailwarden.store.ingest.Writer`).
    """

    def __init__(self, plan: StorePlan, turn: Any = None) -> None:
        import contextlib

        from mailwarden.store.db import open_engine, write_transaction
        from mailwarden.store.ingest import Writer

        self.plan = plan
        # The workers' own lock around each write: a worker waiting for the other one wakes
        # the moment it is done (SQLite's busy handler polls with sleeps of up to 100 ms).
        self._turn = (lambda: turn) if turn is not None else contextlib.nullcontext
        self._tx = write_transaction
        self.engine = open_engine(plan.url, create=False)
        if plan.base.max_id == 0 and self.engine.dialect.name == "sqlite":
            _bulk_load_pragmas(self.engine)
        with self.engine.connect() as conn:
            self.writer = Writer(
                conn,
                attempts_cutoff=plan.attempts_cutoff,
                base=plan.base,
            )

    def take(self, msg: Any) -> None:
        with self._turn(), self._tx(self.engine) as conn:
            self.writer.write(msg[1], conn)

    def finish(self) -> tuple[Any, list[tuple[str, str, str]]]:
        try:
            with self._turn(), self._tx(self.engine) as conn:
                self.writer.finish(conn)
            return self.writer.stats, self.writer.unresolved_links()
        finally:
            self.engine.dispose()


def _bulk_load_pragmas(engine: Any) -> None:
    """A first import into an empty SQLite store: no fsync (a crash of the machine, not of
    mailwarden, may leave a store to delete and import again) and no foreign-key look-ups
    (the writer references only ids it allocated or read). Measured on the 2M-line bench:
    about a tenth of the insert time."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _bulk(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.close()


def run_shard(
    files: list[LogFile],
    me: int,
    nshards: int,
    classifier: Classifier,
    *,
    since: float | None,
    until: float | None,
    show_unparsed: bool,
    plan: StorePlan | None = None,
    progress: Callable[[int], None] | None = None,
    tz: Any = None,
    turn: Any = None,
) -> ShardResult:
    """Parse, correlate, fold (and store, with a ``plan``) shard ``me`` of ``nshards`` of
    ``files`` (oldest first)."""
    from mailwarden.sources.stats import ParseStats

    writer, folder = _shard_folder(classifier, plan, since, until, turn)
    stats = ParseStats()
    unparsed: list[Unparsed] = []
    read = fold_files(
        files,
        me,
        nshards,
        folder,
        stats=stats,
        unparsed=unparsed,
        show_unparsed=show_unparsed,
        progress=progress,
        tz=tz,
    )
    return _finish_shard(ShardResult(folder.agg, stats, unparsed, read), writer)


def _shard_folder(
    classifier: Classifier,
    plan: StorePlan | None,
    since: float | None,
    until: float | None,
    turn: Any = None,
) -> tuple[ShardWriter | None, Folder]:
    """The writer (None: nothing to store) and the folder of one shard."""
    writer = ShardWriter(plan, turn) if plan is not None and not plan.skip else None
    folder = Folder(
        classifier,
        store=writer is not None,
        since=since,
        until=until,
        send=writer.take if writer is not None else None,
        batch_messages=(
            BATCH_MESSAGES if plan is None or plan.base.max_id == 0 else BATCH_MESSAGES_FULL_STORE
        ),
    )
    return writer, folder


def _finish_shard(res: ShardResult, writer: ShardWriter | None) -> ShardResult:
    """``res`` with what its writer stored (the writer's last batch committed)."""
    if writer is not None:
        res.stored, res.links = writer.finish()
    return res


def fold_files(
    files: list[LogFile],
    me: int,
    nshards: int,
    folder: Folder,
    *,
    stats: ParseStats,
    unparsed: list[Unparsed],
    show_unparsed: bool,
    progress: Callable[[int], None] | None = None,
    tz: Any = None,
    accelerated: bool | None = None,
) -> dict[str, int]:
    """The lines of shard ``me`` of ``nshards`` of ``files`` through ``folder`` (its
    aggregate, its store batches), finished; returns the bytes read per file.

    ``accelerated``: None uses the C accelerator when it is built
    (:func:`mailwarden.sources.accel.available`); False runs the pure-Python reference, True
    requires the accelerator. Both give the same result (tests/sources/test_accel.py).
    """
    from mailwarden.sources import accel

    read: dict[str, int] = {}
    done_before = 0

    def on_error(err: SourceError) -> None:
        if me == 0:  # every worker reads every file: report a read error once
            stats.error(str(err))

    if accelerated is None:
        accelerated = accel.available()
    if accelerated:
        fast = accel.FastShard(
            me,
            nshards,
            folder,
            stats=stats,
            unparsed=unparsed,
            show_unparsed=show_unparsed,
            max_unparsed=MAX_UNPARSED_SHOWN,
        )
        for lf in files:
            counter = [0]
            prog = None
            if progress is not None:
                prog = lambda n, base=done_before: progress(base + n)  # noqa: E731
            fast.run_file(lf, lf.envelope(tz), on_error, counter, prog)
            read[str(lf.path)] = counter[0]
            done_before += counter[0]
        fast.finish()
        folder.flush_batch()
        return read

    import itertools

    from mailwarden.sources.postfix import ConnectClaims, parse_lines

    for lf in files:
        counter = [0]
        claims = ConnectClaims()
        lines = _shard_lines(lf.lines(on_error), me, nshards, counter, claims)
        if progress is not None:
            lines = _with_progress(lines, counter, done_before, progress)
        lines = itertools.chain(lines, _released(claims, me, nshards))
        evs = parse_lines(lines, env=lf.envelope(tz), stats=stats, yield_unparsed=show_unparsed)
        folder.events(evs, unparsed)
        stats.total += claims.twins  # read and understood: their status lines say it all
        stats.ignored += claims.twins
        read[str(lf.path)] = counter[0]
        done_before += counter[0]
    folder.finish()
    return read


def _with_progress(
    lines: Iterator[bytes], counter: list[int], base: int, progress: Callable[[int], None]
) -> Iterator[bytes]:
    last = 0
    for n, raw in enumerate(lines):
        yield raw
        if n & 0xFFFF == 0 and counter[0] != last:
            last = counter[0]
            progress(base + last)


def journal_command(
    since: float | None, until: float | None, journalctl: str = "journalctl"
) -> list[str]:
    """The ``journalctl`` command line that lists the mail log (syslog facility ``mail``)."""
    cmd = [journalctl, "--output=json", "--all", "--no-pager", "--quiet"]
    if since is not None:
        cmd.append(f"--since=@{int(since)}")
    if until is not None:
        cmd.append(f"--until=@{int(until) + 1}")  # whole seconds; the events are cut exactly
    return [*cmd, "SYSLOG_FACILITY=2"]


def run_journal(
    cmd: list[str],
    classifier: Classifier,
    *,
    since: float | None,
    until: float | None,
    show_unparsed: bool,
    plan: StorePlan | None = None,
) -> ShardResult:
    """Read the systemd journal through ``cmd`` (see :func:`journal_command`), in-process."""
    import shutil
    import subprocess
    import tempfile

    from mailwarden.errors import SourceError
    from mailwarden.sources.journal import SOURCE, parse_journal
    from mailwarden.sources.stats import ParseStats

    exe = shutil.which(cmd[0])
    if exe is None:
        raise SourceError(f"{cmd[0]} not found (is this a systemd host?)", source=SOURCE)
    writer, folder = _shard_folder(classifier, plan, since, until)
    stats = ParseStats()
    unparsed: list[Unparsed] = []
    counter = [0]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([exe, *cmd[1:]], stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        try:
            lines = _shard_lines(proc.stdout, 0, 1, counter)
            folder.events(parse_journal(lines, stats=stats, yield_unparsed=show_unparsed), unparsed)
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            detail = err.read(2000).decode("utf-8", "replace").strip()
            raise SourceError(f"{cmd[0]} failed (exit {rc}): {detail}", source=SOURCE)
    folder.finish()
    return _finish_shard(ShardResult(folder.agg, stats, unparsed, {SOURCE: counter[0]}), writer)


def _worker(
    conn: Any,
    files: list[LogFile],
    me: int,
    nshards: int,
    classifier: Classifier,
    opts: dict[str, Any],
) -> None:
    try:
        conn.send(("done", run_shard(files, me, nshards, classifier, **opts)))
    except BaseException as exc:  # report any failure to the parent, which raises it
        import traceback

        from mailwarden.errors import MailwardenError

        if isinstance(exc, MailwardenError):  # a deliberate error: its message says it all
            conn.send(("error", str(exc), ""))
        else:
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class AnalyzeResult:
    document: dict[str, Any]
    unparsed: list[Unparsed]


def analyze(
    paths: list[Path],
    *,
    since: float | None = None,
    until: float | None = None,
    db_url: str | None = None,
    show_unparsed: bool = False,
    workers: int = 0,
    attempts_days: int = 90,
    rollup_days: int = 730,
    tz: Any = None,
    progress: Callable[[int, int], None] | None = None,
    classifier: Classifier | None = None,
    journal: list[str] | None = None,
) -> AnalyzeResult:
    """Analyze the log files ``paths`` (read oldest first, whatever their names and compression)
    and return the report document. Files that cannot be read are named in ``errors``; the
    others are analysed; when none can be read, :class:`SourceError` is raised.

    ``db_url`` None: nothing is stored (``--no-store``). ``workers`` 0: automatic (one per
    core, at most two, and one for small inputs). ``progress(done_bytes, total_bytes)`` is
    called from time to time.

    ``journal``: read the systemd journal with this command (:func:`journal_command`) instead
    of ``paths``.

    Storing: each batch of complete messages is committed on its own, so an interrupted run
    leaves what it had stored; running it again adds only the rest (nothing is counted twice).
    """
    from mailwarden.errors import SourceError
    from mailwarden.sources.files import order_files

    if classifier is None:
        from mailwarden.classify.engine import Classifier

        classifier = Classifier.load()
    errors: list[SourceError] = []
    files = [] if journal else order_files(paths, tz=tz, on_error=errors.append)
    if not files and not journal:
        raise errors[0] if errors else SourceError("no log file to read")
    total = sum(lf.size for lf in files)
    n = workers or (min(2, os.cpu_count() or 1) if total >= PARALLEL_MIN_BYTES else 1)

    importer = None
    plan = None
    if db_url is not None:
        importer = Importer(db_url, [fingerprint(lf) for lf in files], attempts_days, rollup_days)
        # a --since/--until run stores only part of the files: do not record them as imported
        importer.partial = since is not None or until is not None
        plan = importer.begin()
    prog = (lambda b: progress(b, total)) if progress else None
    if journal:
        results = [
            run_journal(
                journal,
                classifier,
                since=since,
                until=until,
                show_unparsed=show_unparsed,
                plan=plan,
            )
        ]
    elif n == 1:
        results = [
            run_shard(
                files,
                0,
                1,
                classifier,
                since=since,
                until=until,
                show_unparsed=show_unparsed,
                plan=plan,
                progress=prog,
                tz=tz,
            )
        ]
    else:
        opts = {
            "since": since,
            "until": until,
            "show_unparsed": show_unparsed,
            "plan": plan,
            "tz": tz,
        }
        results = _run_parallel(files, n, classifier, opts, prog)
    from mailwarden.sources.stats import ParseStats

    agg = Aggregate()
    stats = ParseStats()
    unparsed: list[Unparsed] = []
    read: dict[str, int] = {}  # per file: every worker reads every byte
    for r in results:
        agg.merge(r.agg)
        stats.merge(r.stats)
        unparsed.extend(r.unparsed)
        for k, v in r.bytes_read.items():
            read[k] = max(read.get(k, 0), v)
    store_doc = importer.end(results, read) if importer is not None else None
    unparsed.sort(key=lambda u: (u.source, u.offset))
    lines = {
        "total": stats.total,
        "parsed": stats.parsed,
        "ignored": stats.ignored,
        "unparsed": stats.unparsed,
        "foreign": stats.foreign,
        "unparsed_reasons": dict(stats.why),
    }
    for err in errors:  # files that could not be opened at all
        stats.error(str(err))
    sources = [
        {"path": str(lf.path), "compression": lf.compression, "bytes": read.get(str(lf.path), 0)}
        for lf in files
    ]
    if journal:
        sources = [{"path": "journal", "compression": "plain", "bytes": read.get("journal", 0)}]
    doc = build(
        agg,
        lines=lines,
        sources=sources,
        since=since,
        until=until,
        store=store_doc,
        unparsed=[_unparsed_json(u) for u in unparsed] if show_unparsed else None,
        errors=list(stats.errors),
        classifier=classifier,
    )
    return AnalyzeResult(doc, unparsed)


def build(agg: Aggregate, *, classifier: Classifier, **kw: Any) -> dict[str, Any]:
    from mailwarden.report.analyze import build_document

    known = frozenset(getattr(classifier, "providers", {}) or {})
    return build_document(agg, known_providers=known, **kw)


def _unparsed_json(u: Unparsed) -> dict[str, Any]:
    return {"source": u.source, "offset": u.offset, "why": u.why, "line": u.line}


def _run_parallel(
    files: list[LogFile],
    n: int,
    classifier: Classifier,
    opts: dict[str, Any],
    progress: Callable[[int], None] | None,
) -> list[ShardResult]:
    import multiprocessing as mp
    from multiprocessing.connection import wait

    # Load what every worker needs once, before forking, so they share it (copy on write):
    # the public suffix list behind the provider fallback is the big one.
    classifier.provider_for_domain("warm-up.example.com")
    # Keep the garbage collector of the workers off the objects inherited from the parent
    # (it would write to their pages and so copy them into every worker).
    import gc

    gc.collect()
    gc.freeze()
    ctx = mp.get_context("fork")
    opts = {**opts, "turn": ctx.Lock()}
    procs = []
    conns = []
    for me in range(1, n):
        parent, child = ctx.Pipe(duplex=False)
        pr = ctx.Process(target=_worker, args=(child, files, me, n, classifier, opts), daemon=True)
        pr.start()
        child.close()
        procs.append(pr)
        conns.append(parent)
    results: list[ShardResult] = []
    pending: list[Any] = list(conns)
    try:
        # Shard 0 in this process: it would otherwise wait idle, holding its memory (a third
        # of the process tree's), while the others work.
        results.append(run_shard(files, 0, n, classifier, progress=progress, **opts))
        while pending:
            for c in cast(list[Any], wait(pending)):
                try:
                    msg = c.recv()
                except EOFError:
                    pending.remove(c)
                    continue
                tag = msg[0]
                if tag == "done":
                    results.append(msg[1])
                    pending.remove(c)
                elif tag == "error":
                    from mailwarden.errors import MailwardenError

                    detail = f"\n{msg[2]}" if msg[2] else ""
                    raise MailwardenError(f"analyze worker failed: {msg[1]}{detail}")
    finally:
        gc.unfreeze()
        for pr in procs:
            if pr.is_alive() and len(results) < n:
                pr.terminate()
            pr.join(5)
        for c in conns:
            c.close()
    if len(results) != n:
        from mailwarden.errors import MailwardenError

        raise MailwardenError("an analyze worker died without a result")
    return results


class Importer:
    """The coordinator's side of storing: before the workers, decide and prepare; after them,
    finish (indexes, bounce links across shards, the ``imports`` record, retention)."""

    def __init__(
        self, url: str, fps: list[Fingerprint], attempts_days: int, rollup_days: int
    ) -> None:
        self.url = url
        self.fps = fps
        self.attempts_days = attempts_days
        self.rollup_days = rollup_days
        self.started = time.time()
        self.plan: StorePlan | None = None
        self.partial = False

    def begin(self) -> StorePlan:
        from mailwarden.store.db import open_engine, write_transaction
        from mailwarden.store.imports import all_imported
        from mailwarden.store.ingest import defer_indexes, snapshot
        from mailwarden.store.retention import cutoffs

        engine = open_engine(self.url)
        try:
            with write_transaction(engine) as conn:
                skip = all_imported(conn, self.fps)
                base = snapshot(conn)
                if not skip and base.max_id == 0:
                    defer_indexes(conn)
        finally:
            engine.dispose()  # no pooled connection may cross the fork
        a_cut, _ = cutoffs(self.attempts_days, self.rollup_days)
        self.plan = StorePlan(self.url, base, a_cut, skip)
        return self.plan

    def end(self, results: list[ShardResult], read: dict[str, int]) -> dict[str, Any]:
        """``read``: the bytes read per file (see :func:`analyze`)."""
        from mailwarden.store.db import open_engine, safe_url, write_transaction
        from mailwarden.store.imports import record_imports
        from mailwarden.store.ingest import ImportStats, apply_links, restore_indexes
        from mailwarden.store.retention import prune

        assert self.plan is not None
        st = ImportStats()
        for r in results:
            if r.stored is not None:
                for k in st.__slots__:
                    setattr(st, k, getattr(st, k) + getattr(r.stored, k))
        engine = open_engine(self.url, create=False)
        try:
            with write_transaction(engine) as conn:
                restore_indexes(conn)
                if not self.plan.skip:
                    apply_links(conn, [ln for r in results for ln in r.links], self.plan.base)
                    if not self.partial:
                        record_imports(conn, self.fps, read, st, self.started)
            pr = prune(engine, attempts_days=self.attempts_days, rollup_days=self.rollup_days)
        finally:
            engine.dispose()
        return {
            "url": safe_url(self.url),
            "stored": not self.plan.skip,
            "already_imported": self.plan.skip,
            "messages": st.messages,
            "messages_known": st.messages_known,
            "attempts": st.attempts,
            "attempts_known": st.attempts_known,
            "attempts_past_retention": st.attempts_expired,
            "inbound_rejects": st.inbound,
            "rejection_kinds_new": st.kinds,
            "pruned_attempts": pr.attempts,
            "mx_replies": st.mx_replies,
        }
