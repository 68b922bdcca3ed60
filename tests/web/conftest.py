"""Fixtures of the dashboard tests: a store filled by really importing Postfix logs.

The logs are the bundled sample (host ``mail``) and the same sample as logged by a second
machine of the fleet (host ``mx2``: the syslog host field rewritten, three unreadable lines
added), imported with the analyze pipeline exactly as ``mailwarden analyze`` does. Each test
that changes the store gets its own copy.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.postgres import postgres_server  # noqa: F401
from mailwarden.tables import data_dir

SAMPLE = data_dir() / "samples" / "postfix-sample.log"
TOKEN = "test-token-0123456789abcdef"
PASSWORD = "correct horse battery staple"
GARBAGE = [
    "this is not a syslog line at all",
    "Nov 27 19:09:16 mx2 postfix/smtp[1]: \x00\x01 binary junk",
    "Nov 99 99:99:99 mx2 postfix/qmgr[2]: bad stamp",
]


def second_host_log(dst: Path) -> Path:
    """The sample as host ``mx2`` logged it, plus three lines nobody can read."""
    lines = SAMPLE.read_text().splitlines()
    out = []
    for ln in lines:
        # "Nov 27 19:09:13 mail postfix/..." -> host is the 4th field
        parts = ln.split(" ", 4)
        if len(parts) == 5 and parts[3] == "mail":
            parts[3] = "mx2"
        out.append(" ".join(parts))
    out[10:10] = GARBAGE
    dst.write_text("\n".join(out) + "\n")
    return dst


@dataclass
class Imported:
    url: str
    documents: list[dict[str, Any]]  # the analyze documents of the two imports

    @property
    def unparsed(self) -> int:
        return sum(int(d["lines"]["unparsed"]) for d in self.documents)


def import_logs(url: str, workdir: Path) -> Imported:
    from mailwarden.pipeline import analyze
    from mailwarden.report.metrics import record_line_counts
    from mailwarden.store.db import open_engine

    docs = []
    for log in (SAMPLE, second_host_log(workdir / "mx2.log")):
        res = analyze([log], db_url=url, workers=1)
        docs.append(res.document)
        engine = open_engine(url)
        try:
            record_line_counts(engine, res.document["lines"])
        finally:
            engine.dispose()
    return Imported(url, docs)


@pytest.fixture(scope="session")
def imported_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    d = tmp_path_factory.mktemp("web-store")
    return import_logs(f"sqlite:///{d / 'store.db'}", d)


@pytest.fixture
def store(imported_sqlite: Imported, tmp_path: Path) -> Imported:
    """A private copy of the imported SQLite store (tests may change it)."""
    src = Path(imported_sqlite.url.removeprefix("sqlite:///"))
    dst = tmp_path / "store.db"
    shutil.copy(src, dst)
    return Imported(f"sqlite:///{dst}", imported_sqlite.documents)


@pytest.fixture(scope="session")
def imported_pg(
    postgres_server: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Imported]:
    import psycopg

    name = f"web_{uuid.uuid4().hex[:10]}"
    dsn = postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield import_logs(f"{postgres_server}/{name}", tmp_path_factory.mktemp("web-pg"))
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest) -> Imported:
    """The imported store on each backend (read-only use)."""
    if request.param == "sqlite":
        return request.getfixturevalue("imported_sqlite")  # type: ignore[no-any-return]
    return request.getfixturevalue("imported_pg")  # type: ignore[no-any-return]


@dataclass
class Dashboard:
    """An app over a store, with a real breaker engine (store + enforcement view, no Postfix)."""

    app: Any
    engine: Any  # SQLAlchemy engine of the store
    breaker: Any  # mailwarden.breaker.engine.Engine
    view: Path  # the enforcement view file the engine publishes


#: The host the dashboard's breaker engine acts for (the sample logs' syslog host).
BREAKER_HOST = "mail"


def breaker_engine(url: str, view: Path) -> Any:
    """The breaker engine as ``mailwarden breaker`` wires it, minus the Postfix hooks."""
    from mailwarden.breaker.engine import Engine
    from mailwarden.breaker.machine import Machine
    from mailwarden.breaker.rules import RuleSet
    from mailwarden.classify import Classifier
    from mailwarden.postfix.socketmap import write_view
    from mailwarden.store.breaker import BreakerStore
    from mailwarden.store.db import open_engine

    rules = RuleSet.load()
    eng = Engine(
        rules=rules,
        classifier=Classifier.load(),
        machine=Machine(rules),
        store=BreakerStore(open_engine(url), BREAKER_HOST),
        publisher=lambda v, never: write_view(view, v, never),
    )
    eng.load()
    return eng


@pytest.fixture
def dashboard(store: Imported, tmp_path: Path) -> Iterator[Dashboard]:
    from mailwarden.config import Settings
    from mailwarden.store.db import open_engine
    from mailwarden.web.app import create_app
    from mailwarden.web.auth import hash_password
    from mailwarden.web.services import EngineControl

    settings = Settings.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "store": {"url": store.url},
            "web": {"token": TOKEN, "password_hash": hash_password(PASSWORD, n=2**10)},
        }
    )
    engine = open_engine(store.url)
    view = tmp_path / "state" / "breaker-view.json"
    br = breaker_engine(store.url, view)
    app = create_app(
        settings,
        engine=engine,
        control=EngineControl(br, host=BREAKER_HOST),
        health=lambda full: [],
    )
    try:
        yield Dashboard(app, engine, br, view)
    finally:
        engine.dispose()
        br.store.engine.dispose()


def record_egress(url: str) -> list[Any]:
    """A web app's PHP script talking to remote MX servers (blocked by the egress rule), a
    user's mail client on 587, and the MTA's own connections, stored as `egress run` does."""
    import time

    from mailwarden.egress.summary import Recorder
    from mailwarden.events import EgressConnect
    from mailwarden.store.db import open_engine

    now = time.time()
    php = dict(
        source="ebpf", dport=25, uid=33, user="www-data", comm="php-fpm8.2",
        exe="/usr/sbin/php-fpm8.2", cmdline=("php-fpm: pool www",), cwd="/var/www/html",
        script="/var/www/html/wp-content/uploads/contact.php", pool="www",
        parents=((812, "php-fpm8.2"), (1, "init")), unit="php8.2-fpm.service",
        verdict="blocked",
    )  # fmt: skip
    events = [
        EgressConnect(ts=now - 60 + i, daddr=f"198.51.100.{20 + i}", pid=4400 + i, ppid=812,
                      **php)  # type: ignore[arg-type]
        for i in range(4)
    ] + [
        EgressConnect(ts=now - 30, source="ebpf", daddr="198.51.100.40", dport=587, uid=1001,
                      user="alice", comm="thunderbird", exe="/usr/lib/thunderbird/thunderbird",
                      cmdline=("/usr/lib/thunderbird/thunderbird",), verdict="allowed", pid=5000),
        EgressConnect(ts=now - 20, source="nflog", daddr="198.51.100.41", dport=25, uid=104,
                      user="postfix", comm="smtp", exe="/usr/lib/postfix/sbin/smtp",
                      verdict="allowed", mta=True, pid=6000),
    ]  # fmt: skip
    engine = open_engine(url)
    try:
        Recorder(engine).record(events)
    finally:
        engine.dispose()
    return events
