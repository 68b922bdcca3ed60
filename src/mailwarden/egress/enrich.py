"""Enrichment at event time: who is behind a connect (exe, cmdline, cwd, parents, user, unit or
container, the script an interpreter / CGI / PHP-FPM worker runs).

Sources, best first: what the kernel captured inside connect() (argv, exe and cwd paths: exact
even when the process has exited by the time we look), then ``/proc/<pid>`` for what the kernel
event does not carry (environment, cgroup path, grand-parents). The knowledge about interpreters,
PHP-FPM titles and container cgroup layouts is data (``data/egress.toml``), not code.
"""

from __future__ import annotations

import os
import posixpath
import pwd
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from mailwarden.errors import TableError
from mailwarden.tables import load_merged


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interpreter(_M):
    id: str
    names: list[str] = Field(default_factory=list)
    name_regex: str = ""
    with_value: list[str] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list)
    module_flag: str = ""
    script_flag: str = ""
    enabled: bool = True


class Fpm(_M):
    title_regex: str
    env_script: list[str] = Field(default_factory=list)


class ContainerRule(_M):
    id: str
    regex: str
    enabled: bool = True


class UnitRule(_M):
    suffixes: list[str]


class EgressTables(_M):
    """``egress.toml``: interpreters, PHP-FPM, cgroup layouts of units and containers."""

    interpreter: list[Interpreter]
    fpm: Fpm
    container: list[ContainerRule]
    unit: UnitRule


def load_tables(etc: Path | None = None) -> EgressTables:
    """Load ``egress.toml`` (shipped, with the local override merged on top) and validate it."""
    data = load_merged("egress", etc=etc)
    try:
        t = EgressTables.model_validate(data)
        for c in t.container:
            re.compile(c.regex)
        for i in t.interpreter:
            if i.name_regex:
                re.compile(i.name_regex)
        re.compile(t.fpm.title_regex)
    except (PydanticError, re.error) as exc:
        raise TableError(f"egress.toml: {exc}") from exc
    return t


# --------------------------------------------------------------------------------------
# pure helpers (tested on their own)
# --------------------------------------------------------------------------------------


def _interpreter_for(name: str, tables: EgressTables) -> Interpreter | None:
    for it in tables.interpreter:
        if name in it.names or (it.name_regex and re.match(it.name_regex, name)):
            return it
    return None


def find_script(
    argv: tuple[str, ...],
    *,
    exe: str = "",
    cwd: str = "",
    env: dict[str, str] | None = None,
    tables: EgressTables,
) -> tuple[str, str]:
    """Return ``(script, pool)`` for a process: the script file an interpreter, a CGI or a
    PHP-FPM worker runs (absolute when the cwd is known), and the PHP-FPM pool name."""
    pool = ""
    title = " ".join(argv)
    m = re.match(tables.fpm.title_regex, title)
    if m:
        pool = m.group("pool")
    for var in tables.fpm.env_script:
        if env and env.get(var):
            return env[var], pool
    if not argv:
        return "", pool
    it = _interpreter_for(posixpath.basename(argv[0]), tables) or (
        _interpreter_for(posixpath.basename(exe), tables) if exe else None
    )
    if it is None:
        return "", pool
    script = ""
    args = list(argv[1:])
    i = 0
    while i < len(args):
        a = args[i]
        if a in it.stop:
            return "", pool
        if it.module_flag and a == it.module_flag:
            return (f"{it.module_flag} {args[i + 1]}" if i + 1 < len(args) else ""), pool
        if it.script_flag and a == it.script_flag:
            script = args[i + 1] if i + 1 < len(args) else ""
            break
        if a == "--":
            script = args[i + 1] if i + 1 < len(args) else ""
            break
        if a.startswith("-") and a != "-":
            i += 2 if a in it.with_value else 1
            continue
        script = a
        break
    if script and script != "-" and not script.startswith("/") and cwd.startswith("/"):
        script = posixpath.normpath(posixpath.join(cwd, script))
    return script, pool


def unit_of(cgroup: str, tables: EgressTables) -> str:
    """The systemd unit a cgroup v2 path belongs to (innermost unit component), or ``""``."""
    for comp in reversed([c for c in cgroup.split("/") if c]):
        if any(comp.endswith(s) for s in tables.unit.suffixes):
            return comp
    return ""


def container_of(cgroup: str, tables: EgressTables) -> str:
    """The container id in a cgroup v2 path (``docker:3f2a…``), or ``""``."""
    for rule in tables.container:
        m = re.search(rule.regex, cgroup)
        if m:
            return f"{rule.id}:{m.group('id')}"
    return ""


# --------------------------------------------------------------------------------------
# /proc readers
# --------------------------------------------------------------------------------------


def _read(path: Path, limit: int = 65536) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""


def _cmdline(raw: bytes) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_stat(proc: Path, pid: int) -> tuple[str, int, float | None] | None:
    """``(comm, ppid, start)`` from /proc/<pid>/stat, or None when the process is gone.
    ``start`` is the start time in seconds since boot (None if the line is short)."""
    raw = _read(proc / str(pid) / "stat", 4096)
    if not raw:
        return None
    try:
        lpar, rpar = raw.index(b"("), raw.rindex(b")")
        comm = raw[lpar + 1 : rpar].decode("utf-8", "replace")
        fields = raw[rpar + 2 :].split()
        ppid = int(fields[1])
        start = int(fields[19]) / _CLK_TCK if len(fields) > 19 else None
    except (ValueError, IndexError):
        return None
    return comm, ppid, start


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or ``…/unified``)."""
    for line in _read(Path("/proc/self/mountinfo"), 1 << 20).decode(errors="replace").splitlines():
        parts = line.split(" - ")
        if len(parts) == 2 and parts[1].split()[0] == "cgroup2":
            return Path(parts[0].split()[4])
    return None


@dataclass
class CgroupIndex:
    """Maps cgroup v2 ids (the directory's inode number) to paths, rescanning on a miss."""

    root: Path | None = None
    ids: dict[int, str] = field(default_factory=dict)
    scanned: float = 0.0

    def path_of(self, cgid: int) -> str:
        if cgid in self.ids:
            return self.ids[cgid]
        if self.root is None or time.monotonic() - self.scanned < 1.0:
            return ""
        self.scanned = time.monotonic()
        ids: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = "/" + os.path.relpath(dirpath, self.root)
            ids[ino] = "/" if rel == "/." else rel
        self.ids = ids
        return ids.get(cgid, "")


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """What /proc says about a live process (empty fields when it is gone or unreadable)."""

    alive: bool
    exe: str = ""
    cmdline: tuple[str, ...] = ()
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cgroup: str = ""
    ppid: int | None = None
    comm: str = ""
    start: float | None = None  # seconds since boot


def read_proc(pid: int, proc: Path = Path("/proc")) -> ProcInfo:
    """Read what we need of /proc/<pid> (best effort: a process may exit while we read)."""
    base = proc / str(pid)
    st = read_stat(proc, pid)
    if st is None:
        return ProcInfo(alive=False)
    try:
        exe = os.readlink(base / "exe")
    except OSError:
        exe = ""
    try:
        cwd = os.readlink(base / "cwd")
    except OSError:
        cwd = ""
    env: dict[str, str] = {}
    for item in _read(base / "environ", 1 << 17).split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    cgroup = ""
    for line in _read(base / "cgroup", 8192).decode("utf-8", "replace").splitlines():
        if line.startswith("0::"):
            cgroup = line[3:]
    cmdline = _cmdline(_read(base / "cmdline"))
    return ProcInfo(True, exe, cmdline, cwd, env, cgroup, st[1], st[0], st[2])


def parent_chain(
    ppid: int | None, proc: Path = Path("/proc"), *, first_comm: str = "", depth: int = 8
) -> tuple[tuple[int, str], ...]:
    """Parents nearest first as ``(pid, comm)``, up to ``depth``, ending at pid 1."""
    out: list[tuple[int, str]] = []
    pid = ppid
    while pid and len(out) < depth:
        st = read_stat(proc, pid)
        if st is None:
            if not out and first_comm:
                out.append((pid, first_comm))
            break
        out.append((pid, st[0]))
        if pid == 1:
            break
        pid = st[1]
    return tuple(out)
