"""Helpers for the daemon tests: a generated Postfix log, the real daemon as a subprocess, and a
canonical dump of a store to compare a followed log with a one-shot import of the same log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fixtures.slot import free_port

ROOT = Path(__file__).resolve().parents[2]
GENLOG = ROOT / "bench" / "genlog.py"

# Real Postfix 3.7 lines (tests/data/sources): SASL failures from a password-guessing client.
SASL_LINES = [
    "{ts} {host} postfix/submission/smtpd[3401]: warning: unknown[203.0.113.77]: SASL PLAIN "
    "authentication failed: authentication failure, sasl_username=admin@example.test",
    "{ts} {host} postfix/smtpd[3400]: warning: unknown[203.0.113.77]: SASL LOGIN authentication "
    "failed: UGFzc3dvcmQ6",
]


def genlog(path: Path, lines: int, seed: int = 7, host: str = "") -> list[bytes]:
    """A realistic Postfix log (bench/genlog.py, RFC 3339 stamps); ``host`` renames the syslog
    host field. A few SASL failures are mixed in. Returns the lines."""
    raw = path.with_suffix(".raw")
    subprocess.run(
        [
            sys.executable,
            str(GENLOG),
            "--lines",
            str(lines),
            "--seed",
            str(seed),
            "--iso",
            "--out",
            str(raw),
        ],
        check=True,
        capture_output=True,
    )
    out: list[bytes] = []
    for i, line in enumerate(raw.read_bytes().splitlines(keepends=True)):
        if host:
            line = line.replace(b" vm postfix/", f" {host} postfix/".encode(), 1)
        out.append(line)
        if i % 97 == 50:
            ts, h = line.split(b" ")[0].decode(), line.split(b" ")[1].decode()
            out.append((SASL_LINES[i % 2].format(ts=ts, host=h) + "\n").encode())
    raw.unlink()
    path.write_bytes(b"".join(out))
    return out


def write_config(path: Path, state: Path, url: str, **sections: dict[str, Any]) -> Path:
    """A mailwarden.toml for a test daemon: tight timers, nothing that reaches out."""
    base: dict[str, dict[str, Any]] = {
        "store": {"url": url},
        "breaker": {"poll": 0.05, "socketmap_port": free_port()},
        "service": {
            "commit_interval": 0.2,
            "dnsbl_interval": 0,
            "daily_report": "",
            "egress": False,
            "web": False,
            "restart_backoff_max": 1.0,
        },
    }
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    lines = [f'state_dir = "{state}"']
    for sec, vals in base.items():
        lines.append(f"[{sec}]")
        for k, v in vals.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProc:
    """``mailwarden run`` as a real subprocess (the way systemd runs it)."""

    def __init__(self, config: Path, etc: Path, args: list[str], log: Path) -> None:
        self.config = config
        self.args = args
        self.log = log
        self.env = {
            **os.environ,
            "MAILWARDEN_CONFIG": str(config),
            "MAILWARDEN_ETC": str(etc),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailwarden.cli", "run", *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
        fh.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def term(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events written so far (non-JSON lines are returned as {"raw": ...})."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out


def wait_for(pred: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout}s: {what}")
        time.sleep(poll)


def checkpoint_offset(url: str, source: str) -> int:
    """The follow offset the daemon committed for ``source`` (-1: none yet)."""
    from mailwarden.store.db import open_engine
    from mailwarden.store.service import service_checkpoints as t

    e = open_engine(url)
    try:
        with e.connect() as c:
            raw = c.execute(select(t.c.data).where(t.c.source == source)).scalar()
    except Exception:
        return -1
    finally:
        e.dispose()
    if raw is None:
        return -1
    cp = json.loads(raw)
    return -1 if cp.get("rotated") else int(cp["offset"])


def dump_store(url: str, hosts: list[str] | None = None) -> dict[str, Any]:
    """Everything the log put into the store, keyed naturally (no surrogate ids)."""
    from mailwarden.store import schema
    from mailwarden.store.db import open_engine
    from mailwarden.store.service import sasl_failures

    e = open_engine(url)
    m, a, o, r = schema.messages, schema.attempts, schema.origins, schema.rejections
    ru, ib = schema.daily_rollups, schema.inbound_rejects
    out: dict[str, Any] = {}
    try:
        with e.connect() as c:

            def hf(q: Any, col: Any) -> Any:
                return q.where(col.in_(hosts)) if hosts else q

            out["messages"] = sorted(
                tuple(x)
                for x in c.execute(
                    hf(
                        select(
                            m.c.host,
                            m.c.qid,
                            m.c.arrival,
                            o.c.kind,
                            o.c.ident,
                            m.c.sender,
                            m.c.message_id,
                            m.c.size,
                            m.c.nrcpt,
                            m.c.bounce_of,
                            m.c.expired_at,
                            m.c.removed_at,
                        ).join(o, m.c.origin_id == o.c.id),
                        m.c.host,
                    )
                )
            )
            out["attempts"] = sorted(
                tuple(x)
                for x in c.execute(
                    hf(
                        select(
                            m.c.host,
                            m.c.qid,
                            m.c.arrival,
                            a.c.recipient,
                            a.c.ts,
                            a.c.status,
                            a.c.provider,
                            a.c.relay_host,
                            a.c.dsn,
                            r.c.reason,
                            r.c.kind,
                        )
                        .join(m, a.c.message_pk == m.c.id)
                        .outerjoin(r, a.c.rejection_id == r.c.id),
                        m.c.host,
                    )
                )
            )
            out["rollups"] = sorted(
                (str(d), h, p, k, i, s, rs, int(n))
                for d, h, p, k, i, s, rs, n in c.execute(
                    hf(
                        select(
                            ru.c.day,
                            ru.c.host,
                            ru.c.provider,
                            o.c.kind,
                            o.c.ident,
                            ru.c.status,
                            ru.c.reason,
                            ru.c.count,
                        ).join(o, ru.c.origin_id == o.c.id),
                        ru.c.host,
                    )
                )
            )
            if not hosts:
                out["rejections"] = sorted(
                    tuple(x)
                    for x in c.execute(
                        select(
                            r.c.provider,
                            r.c.kind,
                            r.c.reason,
                            r.c.count,
                            r.c.first_seen,
                            r.c.last_seen,
                        )
                    )
                )
            out["inbound"] = sorted(
                tuple(x)
                for x in c.execute(hf(select(ib.c.host, ib.c.ts, ib.c.key, ib.c.action), ib.c.host))
            )
            out["sasl"] = sorted(
                tuple(x)
                for x in c.execute(
                    hf(
                        select(sasl_failures.c.host, sasl_failures.c.ts, sasl_failures.c.key),
                        sasl_failures.c.host,
                    )
                )
            )
    finally:
        e.dispose()
    return out


def one_shot(log: Path, url: str, env: dict[str, str]) -> None:
    """``mailwarden analyze --db URL LOG``: the reference import."""
    p = subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", "analyze", "--json", "--db", url, str(log)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr


#: The store tables a followed log must fill exactly as a one-shot import of the same log does.
STORE_TABLES = ("messages", "attempts", "rollups", "rejections", "inbound")


def same_as_one_shot(
    log: Path,
    url: str,
    env: dict[str, str],
    ref_path: Path,
    tables: tuple[str, ...] = STORE_TABLES,
    hosts: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Import ``log`` one-shot into a new SQLite store at ``ref_path`` and assert that ``tables``
    of the store at ``url`` (only ``hosts``' rows, if given) equal the reference's. Returns both
    dumps, ``(got, want)``, for further checks."""
    ref = f"sqlite:///{ref_path}"
    one_shot(log, ref, env)
    got, want = dump_store(url, hosts=hosts), dump_store(ref)
    for table in tables:
        assert got[table] == want[table], (hosts, table) if hosts else table
    return got, want


def daemon_on(
    tmp_path: Path, n: int, seed: int, head: int, **sections: dict[str, Any]
) -> tuple[list[bytes], Path, Path, str, DaemonProc]:
    """A generated log of ``n`` lines (``full.log``), its first ``head`` lines written to
    ``mail.log``, and a (not yet started) daemon following ``mail.log`` from its start into
    ``daemon.db``; ``sections`` go to :func:`write_config`. Returns ``(lines, full, log, url,
    daemon)``."""
    full = tmp_path / "full.log"
    lines = genlog(full, n, seed=seed)
    log = tmp_path / "mail.log"
    log.write_bytes(b"".join(lines[:head]))
    url = f"sqlite:///{tmp_path / 'daemon.db'}"
    cfg = write_config(tmp_path / "mw.toml", tmp_path / "state", url, **sections)
    d = DaemonProc(
        cfg, tmp_path / "etc", ["--from-start", "--no-socketmap", str(log)], tmp_path / "run.log"
    )
    return lines, full, log, url, d


def sasl_rows(log: Path) -> int:
    return sum(1 for line in log.read_bytes().splitlines() if b"authentication failed" in line)
