"""Row layouts of the store's ingestion: plain tuples, cheap to build and to pickle between the
analyze worker processes and the writer (:mod:`mailwarden.store.ingest`). No SQLAlchemy here, so
workers that only build rows do not import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MESSAGE_COLUMNS = (
    "host",
    "qid",
    "arrival",
    "origin_kind",
    "origin_ident",
    "origin_name",
    "sender",
    "message_id",
    "size",
    "nrcpt",
    "bounce_of",
    "expired_at",
    "removed_at",
)
(M_HOST, M_QID, M_ARRIVAL, M_OKIND, M_OIDENT, M_ONAME, M_SENDER) = range(7)
(M_MSGID, M_SIZE, M_NRCPT, M_BOUNCE_OF, M_EXPIRED, M_REMOVED) = range(7, 13)

#: ``msg`` is the index of the attempt's message in the same batch; ``kind`` is the key of
#: its rejection kind in ``Batch.kinds`` (``""`` for a success); ``reason`` feeds the rollups.
ATTEMPT_COLUMNS = (
    "msg",
    "ts",
    "recipient",
    "orig_recipient",
    "relay_host",
    "relay_ip",
    "relay_port",
    "provider",
    "delay",
    "delays",
    "dsn",
    "status",
    "conn_use",
    "code",
    "enhanced",
    "kind",
    "reason",
)
A_MSG, A_TS, A_RCPT, A_PROVIDER, A_STATUS, A_KIND, A_REASON = 0, 1, 2, 7, 11, 15, 16

KIND_COLUMNS = (
    "provider",
    "kind",
    "reason",
    "scope",
    "code",
    "enhanced",
    "command",
    "issuer",
    "url",
    "cited_ip",
    "rule",
    "internal",
    "sample",
    "first_seen",
    "last_seen",
)

INBOUND_COLUMNS = (
    "host",
    "ts",
    "key",
    "action",
    "stage",
    "client_name",
    "client_ip",
    "code",
    "enhanced",
    "text",
    "sender",
    "recipient",
    "helo",
)


#: Connection-level replies (:class:`mailwarden.events.MxReply`): ``msg`` is the index of the
#: message in the same batch, -1 for a reply of no known message; ``key`` hashes the line
#: (with its rank among equal lines of the message at the same time): the natural key with
#: ``(ts, host)``; ``kind`` as in attempts; ``what`` is said/refused/lost/timeout/connect/tls.
MX_COLUMNS = (
    "msg",
    "host",
    "qid",
    "ts",
    "key",
    "what",
    "relay_host",
    "relay_ip",
    "relay_port",
    "provider",
    "command",
    "code",
    "enhanced",
    "kind",
)
X_MSG, X_TS, X_KEY, X_PROVIDER, X_KIND = 0, 3, 4, 9, 13


@dataclass(slots=True)
class Batch:
    """Rows of complete messages from one worker; see the ``*_COLUMNS`` layouts above."""

    messages: list[tuple[Any, ...]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)
    kinds: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    inbound: list[tuple[Any, ...]] = field(default_factory=list)
    links: list[tuple[str, str, str]] = field(default_factory=list)  # (host, dsn qid, orig qid)
    mx: list[tuple[Any, ...]] = field(default_factory=list)  # MX_COLUMNS
