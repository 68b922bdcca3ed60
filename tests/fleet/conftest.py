"""A PostgreSQL cluster of the test's own (so it can be restarted under load), built with the
helpers of :mod:`fixtures.postgres` (initdb + pg_ctl, loopback only, as the ``postgres`` user
when running as root)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.postgres import _free_port, _pg_bin, _run


class Cluster:
    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            pytest.skip("PostgreSQL server binaries not installed (scripts/debian-packages.txt)")
        self.pg_ctl = pg_ctl
        self.user: str | None = None
        self.base = Path(tempfile.mkdtemp(prefix="mailwarden-fleet-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self.user = "postgres"
        self.data = self.base / "data"
        self.port = _free_port()
        r = _run(
            [
                initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
            self.user,
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr}")
        self.opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=40"
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        r = _run(
            [
                self.pg_ctl,
                "-D",
                str(self.data),
                "-o",
                self.opts,
                "-l",
                str(self.base / "server.log"),
                "-w",
                "-t",
                "60",
                *args,
            ],
            self.user,
        )
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl {args}: {r.stderr}")

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def destroy(self) -> None:
        _run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"], self.user)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.destroy()
