"""Read side of the store: look-ups used by ``trace``, the dashboard and the reports.

* :func:`find_messages`: messages by Message-ID, queue id, host and/or a time window, with their
  origin and delivery attempts (what ``mailwarden trace`` needs to say "this mail went out
  through us, to these relays, with these results");
* :func:`find_attempts`: attempts by recipient and/or time window;
* :func:`message_select`, :func:`message_id_matches` and :func:`load_messages`: the pieces
  :func:`find_messages` is made of, for callers with other criteria (the dashboard's search);
* :func:`rejected_replies`: every reply that named a rejection kind (the recipients' attempts
  and the connection-level replies of ``mx_replies``), the one source of rejection counts;
* :func:`provider_rejections`: rejection kinds with their reply counts over a time window
  (the dashboard's rejections page and the daily report);
* :func:`daily_counts`: the long-term rollups.

All functions take an :class:`~sqlalchemy.engine.Engine` or an open ``Connection`` and return
plain frozen dataclasses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, Subquery, func, select, union_all

from mailwarden.store import schema
from mailwarden.store.db import connected


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    ts: float
    recipient: str
    orig_recipient: str
    relay_host: str
    relay_ip: str
    relay_port: int | None
    provider: str
    delay: float | None
    dsn: str
    status: str
    code: int | None
    enhanced: str
    reason: str  # "" for a success
    scope: str
    text: str  # the stored sample of the rejection kind ("" for a success)
    delays: str  # Postfix's delays=a/b/c/d
    issuer: str  # the rejection kind's issuer, URL and internal flag ("", "", False: success)
    url: str
    internal: bool


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    host: str
    qid: str
    arrival: float
    origin_kind: str
    origin_ident: str
    origin_name: str
    sender: str
    message_id: str
    size: int | None
    nrcpt: int | None
    bounce_of: str
    expired_at: float | None
    removed_at: float | None
    attempts: tuple[StoredAttempt, ...] = ()

    @property
    def origin(self) -> str:
        """``kind:ident`` of the origin, e.g. ``uid:33`` or ``client:192.0.2.7``."""
        return f"{self.origin_kind}:{self.origin_ident}"


@dataclass(frozen=True, slots=True)
class RejectionCount:
    provider: str
    reason: str
    scope: str
    code: int | None
    enhanced: str
    issuer: str
    url: str
    sample: str
    internal: bool
    count: int  # replies in the window
    first_seen: float  # the first and last of them
    last_seen: float
    id: int = 0
    command: str = ""
    cited_ip: str = ""
    rule: str = ""
    kind_first_seen: float = 0.0  # when the kind itself was first stored (may be before since)


def message_id_matches(message_id: str) -> ColumnElement[bool]:
    """``messages.message_id`` is ``message_id``, with or without angle brackets (the log has
    them without)."""
    s = message_id.strip()
    bare = s[1:-1] if s.startswith("<") and s.endswith(">") else s
    return schema.messages.c.message_id.in_([bare, f"<{bare}>"])


def message_select() -> Select[Any]:
    """The columns of :class:`StoredMessage` (without attempts), messages joined to origins."""
    m, o = schema.messages, schema.origins
    return select(
        m.c.id,
        m.c.host,
        m.c.qid,
        m.c.arrival,
        o.c.kind,
        o.c.ident,
        o.c.name,
        m.c.sender,
        m.c.message_id,
        m.c.size,
        m.c.nrcpt,
        m.c.bounce_of,
        m.c.expired_at,
        m.c.removed_at,
    ).join(o, o.c.id == m.c.origin_id)


def load_messages(
    conn: Connection, q: Select[Any], *, with_attempts: bool = True
) -> list[StoredMessage]:
    """Run a :func:`message_select` (with the caller's criteria and order) into
    :class:`StoredMessage` records, with their attempts unless ``with_attempts`` is False."""
    rows = conn.execute(q).all()
    attempts = attempts_of(conn, [r[0] for r in rows]) if with_attempts and rows else {}
    return [
        StoredMessage(*r, attempts=tuple(attempts.get(r[0], ())))  # type: ignore[misc]
        for r in rows
    ]


def find_messages(
    bind: Engine | Connection,
    *,
    message_id: str | None = None,
    qid: str | None = None,
    host: str | None = None,
    around: float | None = None,
    window: float = 3600.0,
    limit: int = 100,
    with_attempts: bool = True,
) -> list[StoredMessage]:
    """Messages matching every given criterion, oldest first.

    ``message_id`` matches with or without angle brackets (the log has them without).
    ``around``/``window``: arrival within ``around ± window`` seconds.
    At least one of ``message_id``, ``qid`` or ``around`` is required.
    """
    if message_id is None and qid is None and around is None:
        raise ValueError("find_messages needs message_id, qid or around")
    m = schema.messages
    conds: list[ColumnElement[bool]] = []
    if message_id is not None:
        conds.append(message_id_matches(message_id))
    if qid is not None:
        conds.append(m.c.qid == qid)
    if host is not None:
        conds.append(m.c.host == host)
    if around is not None:
        conds.append(m.c.arrival.between(around - window, around + window))
    q = message_select().where(*conds).order_by(m.c.arrival, m.c.id).limit(limit)
    with connected(bind) as conn:
        return load_messages(conn, q, with_attempts=with_attempts)


def _attempt_select() -> Select[Any]:
    a, r = schema.attempts, schema.rejections
    return select(
        a.c.message_pk,
        a.c.ts,
        a.c.recipient,
        a.c.orig_recipient,
        a.c.relay_host,
        a.c.relay_ip,
        a.c.relay_port,
        a.c.provider,
        a.c.delay,
        a.c.dsn,
        a.c.status,
        a.c.code,
        a.c.enhanced,
        func.coalesce(r.c.reason, ""),
        func.coalesce(r.c.scope, ""),
        func.coalesce(r.c.sample, ""),
        a.c.delays,
        func.coalesce(r.c.issuer, ""),
        func.coalesce(r.c.url, ""),
        func.coalesce(r.c.internal, False),
    ).outerjoin(r, r.c.id == a.c.rejection_id)


_ATTEMPT_COLUMNS = len(fields(StoredAttempt))


def _attempt(row: Sequence[Any]) -> StoredAttempt:
    """The attempt in ``row[1:]`` (``row[0]`` is its message's key; extra columns follow)."""
    v: tuple[Any, ...] = (*row[1:_ATTEMPT_COLUMNS], bool(row[_ATTEMPT_COLUMNS]))
    return StoredAttempt(*v)


def attempts_of(conn: Connection, message_pks: Sequence[int]) -> dict[int, list[StoredAttempt]]:
    """The attempts of these messages (by primary key), oldest first, 500 keys a query."""
    a = schema.attempts
    out: dict[int, list[StoredAttempt]] = {}
    for i in range(0, len(message_pks), 500):
        chunk = message_pks[i : i + 500]
        q = _attempt_select().where(a.c.message_pk.in_(chunk)).order_by(a.c.ts, a.c.id)
        for row in conn.execute(q):
            out.setdefault(int(row[0]), []).append(_attempt(row))
    return out


def find_attempts(
    bind: Engine | Connection,
    *,
    recipient: str | None = None,
    provider: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 1000,
) -> list[tuple[str, StoredAttempt]]:
    """Attempts (with their message's queue id) by recipient/provider/time, oldest first."""
    a, m = schema.attempts, schema.messages
    q = _attempt_select().add_columns(m.c.qid).join(m, m.c.id == a.c.message_pk)
    conds: list[ColumnElement[bool]] = []
    if recipient is not None:
        conds.append(a.c.recipient == recipient)
    if provider is not None:
        conds.append(a.c.provider == provider)
    if since is not None:
        conds.append(a.c.ts >= since)
    if until is not None:
        conds.append(a.c.ts < until)
    q = q.where(*conds).order_by(a.c.ts, a.c.id).limit(limit)
    with connected(bind) as conn:
        return [(row[-1], _attempt(row)) for row in conn.execute(q)]


def rejected_replies(
    since: float | None = None,
    until: float | None = None,
    hosts: Sequence[str] | None = None,
) -> Subquery:
    """``(ts, rejection_id)`` of every reply that named a rejection kind in ``[since, until)``
    (of the syslog ``hosts``, all when empty): a recipient's attempt or a connection-level
    reply (``mx_replies``: smtp giving up on one MX host before the next). A kind's count is
    the number of these rows, as in the analyze report."""
    a, m, x = schema.attempts, schema.messages, schema.mx_replies
    qa = select(a.c.ts, a.c.rejection_id).where(a.c.rejection_id.is_not(None))
    qx = select(x.c.ts, x.c.rejection_id).where(x.c.rejection_id.is_not(None))
    if since is not None:
        qa, qx = qa.where(a.c.ts >= since), qx.where(x.c.ts >= since)
    if until is not None:
        qa, qx = qa.where(a.c.ts < until), qx.where(x.c.ts < until)
    if hosts:
        qa = qa.join(m, m.c.id == a.c.message_pk).where(m.c.host.in_(list(hosts)))
        qx = qx.where(x.c.host.in_(list(hosts)))
    return union_all(qa, qx).subquery("rejected")


def rejection_counts_query(
    *,
    since: float | None = None,
    until: float | None = None,
    hosts: Sequence[str] | None = None,
    provider: str | None = None,
    reason: str | None = None,
    issuer: str | None = None,
    include_internal: bool = False,
    limit: int | None = None,
) -> Select[Any]:
    """The SELECT behind :func:`provider_rejections`."""
    a, r = rejected_replies(since, until, hosts), schema.rejections
    n = func.count()
    q = (
        select(
            r.c.provider,
            r.c.reason,
            r.c.scope,
            r.c.code,
            r.c.enhanced,
            r.c.issuer,
            r.c.url,
            r.c.sample,
            r.c.internal,
            n,
            func.min(a.c.ts),
            func.max(a.c.ts),
            r.c.id,
            r.c.command,
            r.c.cited_ip,
            r.c.rule,
            r.c.first_seen,
        )
        .select_from(a.join(r, r.c.id == a.c.rejection_id))
        .group_by(r.c.id)
        .order_by(n.desc(), r.c.provider, r.c.id)
    )
    if provider is not None:
        q = q.where(r.c.provider == provider)
    if reason is not None:
        q = q.where(r.c.reason == reason)
    if issuer is not None:
        q = q.where(r.c.issuer == issuer)
    if not include_internal:
        q = q.where(r.c.internal.is_(False))
    if limit is not None:
        q = q.limit(limit)
    return q


def provider_rejections(
    bind: Engine | Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    hosts: Sequence[str] | None = None,
    provider: str | None = None,
    reason: str | None = None,
    issuer: str | None = None,
    include_internal: bool = False,
    limit: int | None = None,
) -> list[RejectionCount]:
    """Rejection kinds counted from the stored replies in ``[since, until)`` of the syslog
    ``hosts`` (:func:`rejected_replies`), most replies first (then by provider and id)."""
    q = rejection_counts_query(
        since=since,
        until=until,
        hosts=hosts,
        provider=provider,
        reason=reason,
        issuer=issuer,
        include_internal=include_internal,
        limit=limit,
    )
    with connected(bind) as conn:
        return [
            RejectionCount(
                provider=row[0],
                reason=row[1],
                scope=row[2],
                code=row[3],
                enhanced=row[4],
                issuer=row[5],
                url=row[6],
                sample=row[7],
                internal=row[8],
                count=int(row[9]),
                first_seen=float(row[10]),
                last_seen=float(row[11]),
                id=int(row[12]),
                command=row[13],
                cited_ip=row[14],
                rule=row[15],
                kind_first_seen=float(row[16]),
            )
            for row in conn.execute(q)
        ]


def daily_counts(
    bind: Engine | Connection,
    *,
    since: dt.date | None = None,
    provider: str | None = None,
) -> list[tuple[dt.date, str, str, str, str, int]]:
    """``(day, provider, origin kind:ident, status, reason, count)`` from the rollups."""
    ru, o = schema.daily_rollups, schema.origins
    q = (
        select(
            ru.c.day,
            ru.c.provider,
            (o.c.kind + ":" + o.c.ident).label("origin"),
            ru.c.status,
            ru.c.reason,
            func.sum(ru.c.count),
        )
        .join(o, o.c.id == ru.c.origin_id)
        .group_by(ru.c.day, ru.c.provider, o.c.kind, o.c.ident, ru.c.status, ru.c.reason)
        .order_by(ru.c.day, ru.c.provider)
    )
    if since is not None:
        q = q.where(ru.c.day >= since)
    if provider is not None:
        q = q.where(ru.c.provider == provider)
    with connected(bind) as conn:
        return [(d, p, og, s, rs, int(c)) for d, p, og, s, rs, c in conn.execute(q)]
