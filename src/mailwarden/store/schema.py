"""The store's SQLAlchemy Core schema: one :data:`metadata` for every table.

Tables of other concerns (egress, breaker, alerts) are declared in their own modules inside this
package (``store/egress.py``, ``store/breaker.py`` ...) on this same ``metadata``, so that one
``metadata.create_all`` creates everything.

This module declares the spine's tables, written by ``mailwarden analyze`` (see
``store/ingest.py``):

* :data:`imports`: one row per imported log file (fingerprint, bytes and lines done);
* :data:`origins`: who submitted mail (local uid, SASL user, client IP, Postfix itself);
* :data:`messages`: one row per queue file, natural key ``(arrival, host, qid)``;
* :data:`attempts`: one row per delivery attempt per recipient, referencing its message and, for a
  non-success, the :data:`rejections` kind;
* :data:`rejections`: the distinct normalised reply kinds per provider (reason, scope, issuer,
  URL, one sample), with first/last seen and a running count, so attempts stay small;
* :data:`mx_replies`: connection-level replies (smtp giving up on one MX host before the next:
  a greeting block, a 4xx at RCPT, a lost or refused connection), referencing their message
  (``NULL``: a ``connect to`` line no process claimed) and their :data:`rejections` kind. A
  table of their own, not attempts with an empty recipient: they name no recipient and never
  change one's state, and every query over attempts (states, rollups, trace) stays as it was.
  They add to their kind's ``count`` like attempts, not to the rollups;
* :data:`inbound_rejects`: what our own smtpd refused (``NOQUEUE: reject``), kept apart;
* :data:`daily_rollups`: attempt counts per day/host/provider/origin/status/reason, kept for years
  after the attempts themselves are pruned.

Times are POSIX seconds (UTC) as double precision, as everywhere in mailwarden. Absent text is
``""``, absent numbers ``NULL``. Text that comes from a log is ``TEXT`` (no length a hostile
line could overflow); the writer cuts indexed free text (addresses, Message-ID) to
:data:`MAX_INDEXED_TEXT` characters, below PostgreSQL's B-tree limit.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Primary key type: BIGINT on PostgreSQL, ``INTEGER`` (the rowid alias) on SQLite.
PK = BigInteger().with_variant(Integer(), "sqlite")

#: Longest value written into an indexed text column (PostgreSQL B-tree entries are limited to
#: about 2700 bytes; addresses are at most 256 octets by RFC 5321).
MAX_INDEXED_TEXT = 600

#: Bumped when the spine's tables change incompatibly; recorded in :data:`store_meta`.
SCHEMA_VERSION = 1

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False, server_default=""),
)

imports = Table(
    "imports",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False),
    Column("first_line_hash", String(64), nullable=False),  # sha256 hex of the first line
    Column("inode", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),  # bytes on disk when imported
    Column("offset_done", BigInteger, nullable=False),  # bytes of (decompressed) content read
    Column("lines", BigInteger, nullable=False, server_default="0"),
    Column("messages", BigInteger, nullable=False, server_default="0"),  # new rows stored
    Column("attempts", BigInteger, nullable=False, server_default="0"),
    Column("started", Double, nullable=False),
    Column("finished", Double, nullable=False),
    UniqueConstraint("first_line_hash", "inode", "size"),
)

origins = Table(
    "origins",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # uid, sasl, client, bounce, unknown
    Column("ident", Text, nullable=False),  # "33", "alice", "192.0.2.1", ""
    Column("name", Text, nullable=False, server_default=""),  # "www-data", client rDNS name
    UniqueConstraint("kind", "ident"),
)

messages = Table(
    "messages",
    metadata,
    # Assigned by the writer (it holds the write lock), so attempts can reference new messages
    # without a round trip per row.
    Column("id", PK, primary_key=True, autoincrement=False),
    Column("host", Text, nullable=False),
    Column("qid", Text, nullable=False),
    Column("arrival", Double, nullable=False),
    Column("origin_id", PK, ForeignKey("origins.id"), nullable=False),
    Column("sender", Text, nullable=False, server_default=""),
    Column("message_id", Text, nullable=False, server_default=""),
    Column("size", BigInteger),
    Column("nrcpt", Integer),
    Column("bounce_of", Text, nullable=False, server_default=""),  # qid of the original
    Column("expired_at", Double),
    Column("removed_at", Double),
    # arrival first: a time range alone (trace --around) or with the host is one index range.
    UniqueConstraint("arrival", "host", "qid"),
    Index(None, "qid"),
    Index(None, "message_id"),
)

rejections = Table(
    "rejections",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("provider", Text, nullable=False),
    Column("kind", String(40), nullable=False),  # hash of the normalised reply, see ingest.kind_key
    Column("reason", Text, nullable=False),
    Column("scope", String(16), nullable=False, server_default=""),
    Column("code", Integer),
    Column("enhanced", Text, nullable=False, server_default=""),
    Column("command", Text, nullable=False, server_default=""),
    Column("issuer", Text, nullable=False, server_default=""),
    Column("url", Text, nullable=False, server_default=""),
    Column("cited_ip", Text, nullable=False, server_default=""),
    Column("rule", Text, nullable=False, server_default=""),
    Column("internal", Boolean, nullable=False, server_default=text("false")),
    Column("sample", Text, nullable=False, server_default=""),  # one full reply text
    Column("first_seen", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("count", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("provider", "kind"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("message_pk", PK, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("ts", Double, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("orig_recipient", Text, nullable=False, server_default=""),
    Column("relay_host", Text, nullable=False, server_default=""),
    Column("relay_ip", Text, nullable=False, server_default=""),
    Column("relay_port", Integer),
    Column("provider", Text, nullable=False, server_default=""),
    Column("delay", Double),
    Column("delays", Text, nullable=False, server_default=""),
    Column("dsn", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False),
    Column("conn_use", Integer),
    Column("code", Integer),
    Column("enhanced", Text, nullable=False, server_default=""),
    Column("rejection_id", PK, ForeignKey("rejections.id")),
    UniqueConstraint("message_pk", "recipient", "ts"),
    Index(None, "recipient"),
    Index(None, "ts"),
    Index(
        None,
        "rejection_id",
        sqlite_where=text("rejection_id IS NOT NULL"),
        postgresql_where=text("rejection_id IS NOT NULL"),
    ),
)

mx_replies = Table(
    "mx_replies",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    # NULL: a reply of no known message ("connect to" without a queue id, never claimed)
    Column("message_pk", PK, ForeignKey("messages.id", ondelete="CASCADE")),
    Column("host", Text, nullable=False),  # syslog host
    Column("qid", Text, nullable=False, server_default=""),
    Column("ts", Double, nullable=False),
    Column("key", String(40), nullable=False),  # hash of the line (and its rank): natural key
    Column("what", String(16), nullable=False),  # said, refused, lost, timeout, connect, tls
    Column("relay_host", Text, nullable=False, server_default=""),
    Column("relay_ip", Text, nullable=False, server_default=""),
    Column("relay_port", Integer),
    Column("provider", Text, nullable=False, server_default=""),
    Column("command", Text, nullable=False, server_default=""),
    Column("code", Integer),
    Column("enhanced", Text, nullable=False, server_default=""),
    Column("rejection_id", PK, ForeignKey("rejections.id")),
    UniqueConstraint("ts", "host", "key"),
    Index(None, "message_pk"),
    Index(None, "rejection_id"),
)

inbound_rejects = Table(
    "inbound_rejects",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("host", Text, nullable=False),
    Column("ts", Double, nullable=False),
    Column("key", String(40), nullable=False),  # hash of the line's content: the natural key
    Column("action", Text, nullable=False),
    Column("stage", Text, nullable=False, server_default=""),
    Column("client_name", Text, nullable=False, server_default=""),
    Column("client_ip", Text, nullable=False, server_default=""),
    Column("code", Integer),
    Column("enhanced", Text, nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    Column("sender", Text, nullable=False, server_default=""),
    Column("recipient", Text, nullable=False, server_default=""),
    Column("helo", Text, nullable=False, server_default=""),
    UniqueConstraint("ts", "host", "key"),
    Index(None, "client_ip"),
)

daily_rollups = Table(
    "daily_rollups",
    metadata,
    Column("day", Date, primary_key=True),  # UTC day of the attempt
    Column("host", Text, primary_key=True),
    Column("provider", Text, primary_key=True),
    Column("origin_id", PK, ForeignKey("origins.id"), primary_key=True),
    Column("status", Text, primary_key=True),
    Column("reason", Text, primary_key=True),  # "" for sent
    Column("count", BigInteger, nullable=False),
)
