"""Fleet mode: several hosts' daemons write to one PostgreSQL, every row tagged with its host;
``mailwarden report`` per host and across the fleet; a PostgreSQL restart under load delays
writes but loses nothing. Real daemons (subprocesses), a real PostgreSQL cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.postgres import Cluster
from service.helpers import (
    DaemonProc,
    checkpoint_offset,
    dump_store,
    genlog,
    same_as_one_shot,
    sasl_rows,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.slow]


def _report(env: dict[str, str], url: str, *hosts: str) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "mailwarden.cli",
        "report",
        "--db",
        url,
        "--since",
        "3650d",
        "--format",
        "json",
    ]
    for h in hosts:
        args += ["--host", h]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def _daemon(tmp: Path, name: str, url: str, log: Path) -> DaemonProc:
    cfg = write_config(tmp / f"{name}.toml", tmp / f"state-{name}", url)
    return DaemonProc(
        cfg,
        tmp / "etc",
        ["--from-start", "--no-socketmap", "--host", name, "--db", url, str(log)],
        tmp / f"run-{name}.log",
    )


def test_two_hosts_one_postgres_report_per_host_and_fleet(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    url = pg_cluster.url
    logs = {}
    for i, h in enumerate(("mx-a", "mx-b")):
        logs[h] = tmp_path / f"{h}.log"
        genlog(logs[h], 1500, seed=20 + i, host=h)
    daemons = {h: _daemon(tmp_path, h, url, logs[h]) for h in logs}
    try:
        for d in daemons.values():
            d.start()
        for h in daemons:
            size = logs[h].stat().st_size
            wait_for(
                lambda h=h, size=size: checkpoint_offset_host(url, h, str(logs[h])) == size,
                120,
                f"{h} ingested",
            )
        for d in daemons.values():
            assert d.term() == 0
    finally:
        for d in daemons.values():
            d.stop()
    # each host's rows are exactly a one-shot import of its own log
    for h, log in logs.items():
        tables = ("messages", "attempts", "rollups", "inbound")
        got, _ = same_as_one_shot(log, url, daemons[h].env, tmp_path / f"{h}.db", tables, [h])
        assert len(got["sasl"]) == sasl_rows(log)
    env = daemons["mx-a"].env
    ra, rb, fleet = _report(env, url, "mx-a"), _report(env, url, "mx-b"), _report(env, url)
    assert ra["hosts"] == ["mx-a"] and fleet["hosts"] == []
    for key in ("attempts", "sent", "deferred", "bounced"):
        assert ra["summary"][key] + rb["summary"][key] == fleet["summary"][key] > 0, key
    assert ra["summary"]["attempts"] != rb["summary"]["attempts"]  # different logs, told apart
    assert ra["sasl"]["failures"] + rb["sasl"]["failures"] == fleet["sasl"]["failures"] > 0
    # the per-host report counts agree with the host's own rows
    assert ra["summary"]["attempts"] == len(dump_store(url, hosts=["mx-a"])["attempts"])


def checkpoint_offset_host(url: str, host: str, source: str) -> int:
    import json as _j

    from sqlalchemy import select

    from mailwarden.store.db import open_engine
    from mailwarden.store.service import service_checkpoints as t

    e = open_engine(url)
    try:
        with e.connect() as c:
            raw = c.execute(select(t.c.data).where(t.c.host == host, t.c.source == source)).scalar()
    except Exception:
        return -1
    finally:
        e.dispose()
    return -1 if raw is None else int(_j.loads(raw)["offset"])


def test_postgres_restart_under_load_delays_writes_but_loses_nothing(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    url = pg_cluster.url
    full = tmp_path / "full.log"
    lines = genlog(full, 5000, seed=31, host="mx-c")
    log = tmp_path / "mail.log"
    log.write_bytes(b"".join(lines[:500]))
    d = _daemon(tmp_path, "mx-c", url, log)
    stop = threading.Event()

    def writer() -> None:  # the log keeps growing the whole time
        with log.open("ab") as f:
            for i in range(500, len(lines), 25):
                f.write(b"".join(lines[i : i + 25]))
                f.flush()
                if stop.wait(0.01):
                    return

    t = threading.Thread(target=writer)
    try:
        d.start()
        wait_for(lambda: checkpoint_offset(url, str(log)) > 0, 60, "first commit")
        t.start()
        time.sleep(0.5)
        pg_cluster.stop("fast")  # down in the middle of the stream
        time.sleep(2.5)
        pg_cluster.start()
        t.join(120)
        size = log.stat().st_size
        wait_for(lambda: checkpoint_offset(url, str(log)) == size, 120, "caught up")
        assert d.term() == 0
    finally:
        stop.set()
        d.stop()
    got, _ = same_as_one_shot(full, url, d.env, tmp_path / "ref.db")
    assert len(got["sasl"]) == sasl_rows(full)
    retries = [e for e in d.events() if e.get("msg") == "store write failed, retrying"]
    assert retries, "the outage was not noticed"
