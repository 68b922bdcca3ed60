"""Opening the store: URL handling, SQLite pragmas (WAL), schema creation, write locking.

``open_engine(url)`` is the one way every command gets an :class:`~sqlalchemy.engine.Engine`:

* ``sqlite:///path`` (the default, see :meth:`mailwarden.config.Settings.db_url`): the parent
  directory is created; every connection gets ``journal_mode=WAL``, ``synchronous=NORMAL``,
  ``foreign_keys=ON`` and a busy timeout, and transactions are begun explicitly so that a writer
  can take the write lock up front (``BEGIN IMMEDIATE``, see :func:`write_transaction`);
* ``postgresql://...``: the psycopg 3 driver is used when the URL names none.

All tables registered on :data:`mailwarden.store.schema.metadata` (including those of other
concerns in ``store/*.py``) are created if missing.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from mailwarden.errors import StoreError
from mailwarden.store import schema

_BUSY_TIMEOUT_MS = 30_000
_LOCK_KEY = 7262311  # PostgreSQL advisory lock of the store's writers


def normalise_url(url: str) -> str:
    """Pick the installed driver for bare ``postgresql://`` URLs; check the URL parses."""
    try:
        u = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {url!r}: {exc}") from exc
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise StoreError(f"unsupported database {u.drivername!r}: use sqlite:/// or postgresql://")
    return u.render_as_string(hide_password=False)


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def _load_table_modules() -> None:
    """Import every ``mailwarden.store.*`` module so its tables join the shared metadata."""
    import mailwarden.store as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"mailwarden.store.{mod.name}")


def _sqlite_engine(url: str, echo: bool) -> Engine:
    u = make_url(url)
    db = u.database or ""
    if db and db != ":memory:" and not db.startswith("file:"):
        try:
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {db}: {exc.strerror}") from exc
    # isolation_level=None: the driver does not BEGIN on its own; the "begin" hook below does,
    # which makes BEGIN IMMEDIATE possible and keeps SAVEPOINT semantics right.
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"isolation_level": None, "timeout": _BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")  # first: the next ones may wait
        if db != ":memory:":
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        # checkpoint the WAL every ~40 MB instead of 4 MB: fewer fsyncs during bulk imports
        cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("mailwarden_write_lock", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_engine(url: str, *, create: bool = True, echo: bool = False) -> Engine:
    """Open (and by default create) the store at ``url``; errors become :class:`StoreError`."""
    url = normalise_url(url)
    try:
        if url.startswith("sqlite"):
            engine = _sqlite_engine(url, echo)
        else:
            engine = create_engine(url, echo=echo, pool_pre_ping=True)
        if create:
            _load_table_modules()
            # with the write lock from the start: two processes creating a new store at once
            # must queue, not fail upgrading a read transaction
            with _locked(engine) as conn:
                schema.metadata.create_all(conn, checkfirst=True)
                _check_version(conn)
            _restore_indexes(engine)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the store {safe_url(url)}: {_first_line(exc)}") from exc
    return engine


def _restore_indexes(engine: Engine) -> None:
    """An import into an empty store drops the secondary indexes and builds them at its end;
    if it was killed in between, build them now (cheap no-op when they are there)."""
    from sqlalchemy import inspect

    from mailwarden.store.ingest import restore_indexes

    have = {ix["name"] for t in ("messages", "attempts") for ix in inspect(engine).get_indexes(t)}
    want = {str(ix.name) for t in (schema.messages, schema.attempts) for ix in t.indexes}
    if not want <= have:
        with write_transaction(engine) as conn:
            restore_indexes(conn)


def _check_version(conn: Connection) -> None:
    t = schema.store_meta
    row = conn.execute(select(t.c.value).where(t.c.key == "schema_version")).first()
    if row is None:
        conn.execute(t.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
    elif int(row[0]) > schema.SCHEMA_VERSION:
        raise StoreError(
            f"the store has schema version {row[0]}, newer than this mailwarden "
            f"({schema.SCHEMA_VERSION}): upgrade mailwarden"
        )


@contextmanager
def connected(bind: Engine | Connection) -> Iterator[Connection]:
    """The connection itself, or a new one of the engine for the ``with`` block: for read
    functions that take either."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the store's write lock from its first statement.

    SQLite: ``BEGIN IMMEDIATE`` (other writers wait, readers go on under WAL). PostgreSQL: a
    transaction-scoped advisory lock, so two importers never allocate the same message ids.
    """
    try:
        with _locked(engine) as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise StoreError(f"store write failed: {_first_line(exc)}") from exc


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """:func:`write_transaction` without its error wrapping."""
    with engine.connect() as conn:
        conn = conn.execution_options(mailwarden_write_lock=True)
        with conn.begin():
            if not is_sqlite(conn):
                conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})"))
            yield conn


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
